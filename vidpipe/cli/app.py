"""The `vidpipe` click group and its one error policy; command modules register on `cli` here, and
`main.py` imports them all (so no command module imports `main`)."""

from __future__ import annotations

import click

from vidpipe.errors import VidpipeError


class _Group(click.Group):
    """Turns VidpipeError into a one-line `Error: ...` and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VidpipeError as e:
            raise click.ClickException(one_line(str(e))) from None
        except PermissionError as e:  # not a damaged file: say which one and why
            raise click.ClickException(f"permission denied: {e.filename or e}; check who owns it or choose another path") from None
        except OSError as e:
            if e.filename is None:  # no path to name: a bug, keep its traceback
                raise
            raise click.ClickException(f"cannot use {e.filename}: {e.strerror or e}") from None
        except KeyboardInterrupt:
            click.echo("Error: interrupted; what was finished is kept: the same command carries on from it", err=True)
            ctx.exit(130)


def one_line(message: str) -> str:
    """A VidpipeError raised in a DataLoader worker reaches the main process with the worker's traceback
    folded into its message: keep only the error's own sentence."""
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split("VidpipeError: ", 1)[-1]
    return message


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="vidpipe")
def cli():
    """Decode videos once into sharded stores, cache backbone features, train video models many times."""
