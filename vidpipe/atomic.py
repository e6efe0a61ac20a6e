"""Publishing a small text file so that a reader, or a kill at any moment, sees the old file or the new
one, never half of one: write a temporary file beside it, then rename it over the target."""

from __future__ import annotations

from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
