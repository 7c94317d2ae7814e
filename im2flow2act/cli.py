"""The ``im2flow2act`` command: assembles the sub-commands each package owns.

Each package exposes ``register(app)`` in its ``cli`` module; this file only collects them, so a stage's
commands live next to its code.
"""

from __future__ import annotations

import errno

import typer

import im2flow2act.im2flow.cli
import im2flow2act.policies.cli
import im2flow2act.preprocessing.cli

app = typer.Typer(
    name="im2flow2act",
    help="Teach robots manipulation skills from videos of people, with object flow as the interface.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
im2flow2act.preprocessing.cli.register(app)
im2flow2act.im2flow.cli.register(app)
im2flow2act.policies.cli.register(app)


REFUSED_BY_THE_FILE_SYSTEM = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
}
"""Faults of the place written to, not of the code: reported as one line naming the path, not a traceback.
Each command checks its ``--out`` folder up front; this catches what goes wrong after (a full disk, a file
where a folder should be)."""


def main() -> None:
    try:
        app()
    except OSError as err:
        if err.errno not in REFUSED_BY_THE_FILE_SYSTEM:
            raise
        path = err.filename if err.filename2 is None else f"{err.filename} → {err.filename2}"
        typer.secho(f"error: {path}: {err.strerror}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from err


if __name__ == "__main__":
    main()
