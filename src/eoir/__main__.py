"""``python -m eoir``: the same as the ``eoir`` command."""

import sys

from eoir.cli import main

sys.exit(main())
