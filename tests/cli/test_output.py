"""What a person reads: progress in a log file, figures with two significant digits, plurals, options
resolved."""

import re

from click.testing import CliRunner

from vidpipe.cli.main import cli
from vidpipe.cli.ui import plain_progress, plural


def test_progress_lines_when_output_is_not_a_terminal(synth_h264, tmp_path):
    """CliRunner's output is not a terminal: extract says how far it is in plain lines, not nothing."""
    res = CliRunner().invoke(cli, ["extract", "--dataset", "synthetic", "--root", str(synth_h264), "--out", str(tmp_path / "s"),
                                   "--frames", "4", "--size", "32"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("extract: ")]
    assert lines and lines[-1].startswith("extract: 30/30 videos (100%)"), res.output
    assert re.search(r"\d videos/s", lines[-1])


def test_plain_progress_shows_every_tenth_and_the_end(monkeypatch):
    import io

    from rich.console import Console

    import vidpipe.cli.ui as ui

    sink = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=sink, width=200))
    with plain_progress(25, "work", "clips") as advance:
        for _ in range(25):
            advance()
    shown = [x for x in sink.getvalue().splitlines() if x.startswith("work: ")]
    assert [x.split(" clips")[0] for x in shown] == [f"work: {n}/25" for n in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25)]
    assert shown[-1].startswith("work: 25/25 clips (100%)")


def test_plurals_and_resolved_model_options():
    assert plural(1, "window") == "1 window" and plural(2, "problem") == "2 problems"
    res = CliRunner().invoke(cli, ["models", "vivit_fe"])
    assert res.exit_code == 0, res.output
    assert "768 (preset base)" in res.output and " 0 " not in res.output.split("options")[1].split("weights")[0]


def test_an_fps_store_faster_than_its_videos_is_warned_about(synth_h264, tmp_path):
    res = CliRunner().invoke(cli, ["extract", "--dataset", "synthetic", "--root", str(synth_h264), "--out", str(tmp_path / "s"),
                                   "--fps", "100", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "--fps 100 is above the videos' own" in res.output
    res = CliRunner().invoke(cli, ["extract", "--dataset", "synthetic", "--root", str(synth_h264), "--out", str(tmp_path / "t"),
                                   "--fps", "5", "--size", "32"])
    assert res.exit_code == 0 and "is above the videos' own" not in res.output
