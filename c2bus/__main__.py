"""``python -m c2bus`` is the ``c2bus`` command."""

import sys

from c2bus.tools.cli import main

sys.exit(main())
