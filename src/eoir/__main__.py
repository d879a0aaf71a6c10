"""``python -m eoir``: the same as the ``eoir`` command."""

from eoir.cli import run

run()
