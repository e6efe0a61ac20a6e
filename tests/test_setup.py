"""The install itself: torch and torchvision load together, including torchvision's compiled ops."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_torchvision_imports_and_its_ops_run():
    import torch
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    pinned = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert torchvision.__version__.split("+")[0] == pinned["torchvision"]  # the pair the Makefile pins is the one installed
    assert torch.__version__.split("+")[0] == pinned["torch"]


def test_console_script_lists_commands():
    res = subprocess.run([sys.executable, "-m", "vidpipe", "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for command in ("datasets", "manifest", "synth"):
        assert command in res.stdout


def test_cli_starts_without_importing_torch():
    # `vidpipe --help`, `vidpipe datasets`, `vidpipe extract` must not pay torch's ~3 s import
    code = "import sys, vidpipe.cli.main; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_make_test_lints_before_it_tests_then_builds_the_docs():
    """`make test` (and so CI) runs ruff with the project's configuration before pytest, then builds the
    documentation strictly (a warning fails it)."""
    import re
    import tomllib

    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1).splitlines()
    assert "ruff check vidpipe tests benchmarks" in recipe[0] and "pytest" in recipe[1]
    assert "mkdocs build --strict" in recipe[-1]
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["select"] == ["E", "F", "W"]
