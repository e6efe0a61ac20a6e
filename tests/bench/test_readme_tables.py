"""README tables that come from committed benchmark JSON are exactly what benchmarks/tables.py makes of it."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tables():
    spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["stores", "extract", "hybrid", "loader", "peers", "demo"])
def test_the_readme_table_is_generated_from_the_committed_json(name):
    assert getattr(tables(), name)().strip() in (ROOT / "README.md").read_text()
