"""Files every stage writes or checks: atomic publication of small text files, sha256 of a file."""

from __future__ import annotations

import hashlib
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    """A reader, or a kill at any moment, sees the old file or the new one, never half of one: write a
    temporary file beside it, then rename it over the target."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
