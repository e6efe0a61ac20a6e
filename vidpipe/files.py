"""Files every stage writes or checks: atomic publication of small text files, sha256 of a file, and
the rules that keep names read from a store, manifest or checkpoint (untrusted data) inside their folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath

from vidpipe.errors import VidpipeError, no_space

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # pipe:, http:, s3:, file:, C: ...
COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def relative_inside(rel, what: str) -> PurePosixPath:
    """A relative path read from an index or manifest, checked by its text alone: no absolute path, no
    `..`, no URL or `pipe:` scheme, no empty or control characters. Raises a one-line VidpipeError."""
    if not isinstance(rel, str) or not rel or any(ord(c) < 32 for c in rel) or "\\" in rel:
        raise VidpipeError(f"{what}: {rel!r} is not a relative path")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or _SCHEME.match(rel):
        raise VidpipeError(f"{what}: {rel!r} leads outside its folder (absolute, `..` or a URL scheme); vidpipe refuses it")
    return p


def inside(root: str | Path, rel, what: str) -> Path:
    """root/rel for a path read from root's own index (a shard, an array, a part record): refused in one
    line unless it stays inside root, symlinks followed. It is then only ever opened as a local file."""
    relative_inside(rel, what)
    path = Path(root) / rel
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise VidpipeError(f"{what}: {rel!r} is a link that leads outside {root}; vidpipe refuses it")
    return path


def safe_component(name, what: str) -> str:
    """A name that becomes a file or folder name (a split): letters, digits, `_ . + -`, not starting
    with a dot."""
    if not isinstance(name, str) or not COMPONENT.match(name):
        raise VidpipeError(f"{what} {name!r} cannot name a file: use letters, digits, '_', '-', '.' or '+' (not first)")
    return name


def read_json(path: str | Path, fix: str):
    """A JSON file a stage trusts (store.json, config.json, a plan): a missing, truncated or unreadable
    one is a one-line VidpipeError that says what to do (`fix`), never a JSONDecodeError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VidpipeError(f"{path} not found; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VidpipeError(f"{path} is damaged (not JSON: {e.__class__.__name__} at {getattr(e, 'pos', '?')}); {fix}") from None
    except IsADirectoryError:
        raise VidpipeError(f"{path} is a folder, not a file; {fix}") from None


def is_no_space(error: BaseException) -> bool:
    """A full disk, as an OSError or as a library's own error type (safetensors) that says so."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left" in str(error) or "StorageFull" in str(error)


def write_text_atomic(path: str | Path, text: str) -> None:
    """A reader, or a kill at any moment, sees the old file or the new one, never half of one: write a
    temporary file beside it, then rename it over the target."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def disk_full_reported(path: str | Path, needed_bytes: int | None = None):
    """Inside, a full disk (an OSError or a library's own error that says so) becomes the one-line
    `no_space` error naming `path`; anything else passes through unchanged."""
    try:
        yield
    except VidpipeError:
        raise
    except Exception as e:
        if is_no_space(e):
            raise no_space(path, needed_bytes) from None
        raise


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: str):
    """Hold an exclusive flock on `path` (created if needed) for the block; if another process holds it,
    raise VidpipeError(busy) at once. The kernel releases it when the holder dies, so a kill never leaves it held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VidpipeError(busy) from None
        yield
    finally:
        os.close(fd)  # releases the lock
