"""The documentation's benchmark tables are exactly what benchmarks/tables.py makes of the committed JSON."""

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tables():
    spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_table_in_the_docs_is_current():
    assert tables().update_docs(write=False) == [], "run `make docs` (benchmarks/tables.py --write) and commit the pages"


def test_every_table_generator_has_a_place_in_the_docs():
    t = tables()
    used = {m.group(2) for page in (ROOT / "docs").rglob("*.md") for m in t.BLOCK.finditer(page.read_text())}
    assert used == set(t.TABLES)


def test_a_figure_edited_by_hand_is_found_and_rewritten(tmp_path):
    t = tables()
    t.DOCS = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", t.DOCS)
    page = t.DOCS / "benchmarks.md"
    block = next(t.BLOCK.finditer(page.read_text()))
    edited = block.group(3).replace("|", "| 9", 2)  # a number typed into the first row
    page.write_text(page.read_text().replace(block.group(3), edited))
    assert t.update_docs(write=False) == ["docs/benchmarks.md"]
    assert t.update_docs(write=True) == ["docs/benchmarks.md"] and t.update_docs(write=False) == []
    assert page.read_text() == (ROOT / "docs" / "benchmarks.md").read_text()


def test_an_empty_block_is_filled_and_the_text_after_it_kept(tmp_path):
    """A new block (no table yet) ends at its own closing marker, not at the next block's."""
    t = tables()
    t.DOCS = tmp_path / "docs"
    t.DOCS.mkdir()
    page = t.DOCS / "page.md"
    page.write_text("intro\n<!-- table: demo -->\n<!-- /table -->\n\nprose between\n\n<!-- table: peers -->\nold\n<!-- /table -->\nend\n")
    assert t.update_docs(write=True) == ["docs/page.md"]
    assert page.read_text() == (f"intro\n<!-- table: demo -->\n{t.demo().strip()}\n<!-- /table -->\n\nprose between\n\n"
                                f"<!-- table: peers -->\n{t.peers().strip()}\n<!-- /table -->\nend\n")
