"""The package layering holds: each package imports only packages below it, and the library never
imports the CLI. Each package is imported in a fresh interpreter and `sys.modules` is read back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import vidpipe

# Lowest first. The top-level helper modules (errors, typed, files, devices) sit below everything.
LAYERS = ["io", "datasets", "models", "stores", "data", "train", "predict", "bench", "cli"]
BASE = {"vidpipe", "vidpipe.errors", "vidpipe.typed", "vidpipe.files", "vidpipe.devices"}
PACKAGE = Path(vidpipe.__file__).parent


def imported_by(modules: list[str]) -> set[str]:
    code = f"import json, sys, {', '.join(modules)}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('vidpipe'))))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(res.stdout))


def test_every_package_is_in_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), "add the new package to LAYERS (and to docs/architecture.md's layout)"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_package_imports_only_the_packages_below_it(layer):
    below = set(LAYERS[: LAYERS.index(layer) + 1])
    modules = [f"vidpipe.{layer}.{p.stem}" for p in sorted((PACKAGE / layer).glob("*.py")) if p.stem != "__init__"]
    outside = sorted(m for m in imported_by(modules) - BASE if m.split(".")[1] not in below)
    assert not outside, f"vidpipe.{layer} imports {outside}"


def test_the_helper_modules_import_no_package():
    assert imported_by(sorted(BASE)) == BASE


def test_the_documented_layout_lists_exactly_the_packages():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    section = page.split("## Layout of this repository", 1)[1].split("\n## ", 1)[0]
    import re

    listed = set(re.findall(r"^vidpipe/(\w+)/", section, re.M))
    assert listed == set(LAYERS), "docs/architecture.md's layout section and the package tree differ"
    modules = {p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert all(m in section for m in modules), "every top-level module is named in docs/architecture.md's layout"


def _cli_imports(path: Path) -> set[str]:
    """The vidpipe.cli modules a file imports (statically, wherever the import stands)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vidpipe.cli"):
            found |= {node.module} if node.module != "vidpipe.cli" else {f"vidpipe.cli.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vidpipe.cli.")}
    return found


def test_the_cli_has_no_import_circle():
    """Command modules register on `cli.app`; only `main` (and `__main__`) import `main`, and no command
    module imports another (shared printing lives in `cli.ui`)."""
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        imports = _cli_imports(path)
        assert "vidpipe.cli.main" not in imports, f"{path.name} imports vidpipe.cli.main"
        if path.stem.endswith("_commands"):
            others = {m for m in imports if m.endswith("_commands")}
            assert not others, f"{path.name} imports {sorted(others)}"
