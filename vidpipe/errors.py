"""The one exception type users see.

A `VidpipeError` is a user mistake or bad input (missing root, corrupt video, mismatched store).
Its message is one line that names the fix; the CLI prints it without a traceback.
Anything else escaping the library is a bug and keeps its traceback.
"""


class VidpipeError(Exception):
    pass
