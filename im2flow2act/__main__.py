"""``python -m im2flow2act`` is the ``im2flow2act`` command."""

from im2flow2act.cli import main

main()
