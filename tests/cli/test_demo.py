"""`make demo` can run again: it clears its own earlier output, and only that."""

import subprocess
import sys

import pytest

from vidpipe.cli.demo_commands import MARKER, prepare_out
from vidpipe.errors import VidpipeError


def test_demo_clears_its_own_earlier_output(tmp_path):
    out = tmp_path / "demo-output"
    prepare_out(out)
    (out / "run-tsn_mean").mkdir()
    (out / "run-tsn_mean" / "metrics.json").write_text("{}")
    prepare_out(out)  # a second demo starts from scratch
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


def test_demo_never_clears_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(VidpipeError, match="not made by the demo"):
        prepare_out(out)
    assert (out / "thesis.tex").read_text() == "precious"
    res = subprocess.run([sys.executable, "-m", "vidpipe", "demo", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.strip().startswith("Error:") and "Traceback" not in res.stderr
