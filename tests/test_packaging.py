"""A built wheel holds every module and every dataset card, and works outside the source tree."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # build from a clean copy (an in-tree build/ folder would hand stale files to the wheel), offline: the
    # build backend (setuptools, a dependency of torch) is already in the environment
    src = out / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".*", "build", "demo-output", "*.egg-info", "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                          "-w", str(out), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (path,) = out.glob("vidpipe-*.whl")
    return path


def test_wheel_holds_every_module_and_card(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "vidpipe").rglob("*.py") if "__pycache__" not in p.parts}
    cards = {f"vidpipe/manifests/{p.name}" for p in (REPO / "vidpipe" / "manifests").glob("*.toml")}
    assert modules and cards
    assert modules - names == set()
    assert cards - names == set()


def test_installed_wheel_finds_its_cards_away_from_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-m", "vidpipe", "datasets"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hmdb51" in res.stdout and "ucf101" in res.stdout
    where = subprocess.run([sys.executable, "-c", "from vidpipe.datasets import cards; print(cards.CARDS_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()) == target / "vidpipe" / "manifests"


IMPORT_NAMES = {"pyyaml": "yaml", "imageio-ffmpeg": "imageio_ffmpeg", "tomli": "tomli", "pillow": "PIL"}


def test_every_dependency_is_used_and_none_is_pinned_exactly():
    """A library's dependencies are ranges (the Makefile's constraints pin the tested pair), and each
    is imported by vidpipe itself."""
    import re
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    source = "\n".join(p.read_text() for p in (REPO / "vidpipe").rglob("*.py"))
    for dep in deps:
        name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]
        assert "==" not in dep, f"{dep}: pin exact versions in constraints.txt, not in the library's dependencies"
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), f"{name} is a dependency that vidpipe never imports"


def test_packages_are_found_not_listed():
    """pyproject finds every package under vidpipe/: a new one cannot be left out of the wheel."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["packages"] == {"find": {"include": ["vidpipe*"]}}
