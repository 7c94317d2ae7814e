"""The ``im2flow2act`` command: assembles the sub-commands each package owns.

Each package exposes ``register(app)`` in its ``cli`` module; this file only collects them, so a stage's
commands live next to its code.
"""

from __future__ import annotations

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
