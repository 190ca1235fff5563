"""``python -m services`` is the ``c2bus`` command."""

import sys

from .cli import main

sys.exit(main())
