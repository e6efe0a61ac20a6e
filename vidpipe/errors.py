"""The one exception type users see.

A `VidpipeError` is a user mistake or bad input (missing root, corrupt video, mismatched store).
Its message is one line that names the fix; the CLI prints it without a traceback.
Anything else escaping the library is a bug and keeps its traceback.
"""


class VidpipeError(Exception):
    pass


def no_space(path, needed_bytes: int | None = None) -> VidpipeError:
    """The one-line error for a full disk while writing `path` (what was already published stays intact)."""
    import shutil
    from pathlib import Path

    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    need = f"about {needed_bytes / 2**20:,.0f} MiB needed, " if needed_bytes else ""
    return VidpipeError(f"no space left on the device writing {path} ({need}{free / 2**20:,.0f} MiB free); "
                        "free some space or write elsewhere, then rerun: finished work is kept")
