"""The documentation's examples do not rot.

- Every code block marked runnable (an HTML comment `<!-- runnable -->` on the line before its fence; bash
  or python) is executed, in page order, in one fresh folder per page, with this environment's `vidpipe`
  first on PATH: each block must exit 0. Blocks that need data make it themselves (`vidpipe synth`), so
  they run offline on small inputs.
- Every `--option` written after `vidpipe COMMAND` anywhere in the docs or the README (code blocks and
  inline code) is an option of that command, as its `--help` knows it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from vidpipe.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
RUNNABLE = re.compile(r"<!-- runnable -->\n```(bash|python)\n(.*?)\n```", re.S)


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each block marked runnable, in page order."""
    return [(m.group(1), m.group(2)) for m in RUNNABLE.finditer(text)]


def run_block(language: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    cmd = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


PAGES_WITH_EXAMPLES = [p for p in PAGES if runnable_blocks(p.read_text())]


def test_the_docs_have_runnable_examples():
    assert {p.name for p in PAGES_WITH_EXAMPLES} >= {"getting-started.md"}


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_runnable_examples_run(page, tmp_path):
    for k, (language, code) in enumerate(runnable_blocks(page.read_text())):
        res = run_block(language, code, tmp_path)
        assert res.returncode == 0, f"{page.name}, runnable block {k + 1} ({language}) failed:\n{code}\n--- output ---\n{res.stdout[-3000:]}{res.stderr[-3000:]}"


def test_a_broken_example_fails(tmp_path):
    """The runner is not a rubber stamp: an example with an unknown option, or a failing Python line, fails."""
    text = "<!-- runnable -->\n```bash\nvidpipe synth x --no-such-option\n```\n\n<!-- runnable -->\n```python\nimport vidpipe\nraise SystemExit(3)\n```\n"
    blocks = runnable_blocks(text)
    assert [lang for lang, _ in blocks] == ["bash", "python"]
    assert all(run_block(lang, code, tmp_path).returncode != 0 for lang, code in blocks)


# ------------------------------------------------------------------ options named in the docs
def _commands(group: click.Group, prefix: tuple = ()) -> dict[tuple, click.Command]:
    out = {}
    for name, command in group.commands.items():
        out[prefix + (name,)] = command
        if isinstance(command, click.Group):
            out.update(_commands(command, prefix + (name,)))
    return out


COMMANDS = _commands(cli)
CODE = re.compile(r"```[a-z]*\n(.*?)\n```|`([^`\n]+)`", re.S)


def named_options(text: str) -> list[tuple[tuple, str, str]]:
    """(command path, option, the line) for every `--option` after `vidpipe COMMAND` in the code of a page."""
    found = []
    for m in CODE.finditer(text):
        for line in (m.group(1) or m.group(2)).splitlines():
            for part in re.split(r"\||&&|;|\$\(", line.split(" #")[0].replace("\\|", "/")):  # a table's escaped | is not a pipe
                words = part.split()
                if "vidpipe" not in words:
                    continue
                words = words[words.index("vidpipe") + 1 :]
                path = ()
                while words and path + (words[0],) in COMMANDS:
                    path, words = path + (words[0],), words[1:]
                if not path:
                    continue
                for word in words:
                    option = re.match(r"(--[a-z][a-z0-9-]*)", word.strip("[]()`,"))
                    if option:
                        found.append((path, option.group(1), line.strip()))
    return found


def _options_of(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")} | {"--help"}


def test_every_option_named_in_the_docs_exists():
    missing = []
    for page in [*PAGES, ROOT / "README.md"]:
        for path, option, line in named_options(page.read_text()):
            if option not in _options_of(COMMANDS[path]):
                missing.append(f"{page.relative_to(ROOT)}: vidpipe {' '.join(path)} has no {option} ({line[:100]})")
    assert not missing, "\n".join(missing)


def test_the_option_check_finds_a_misspelt_option():
    found = named_options("```bash\nvidpipe extract --dataset x --outt y --frames 8 | head --lines 3\n```\nand `vidpipe train --modle tsn_mean`")
    assert [(p, o) for p, o, _ in found] == [(("extract",), "--dataset"), (("extract",), "--outt"), (("extract",), "--frames"), (("train",), "--modle")]
    assert "--modle" not in _options_of(COMMANDS[("train",)]) and "--dataset" in _options_of(COMMANDS[("extract",)])
