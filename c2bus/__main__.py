"""``python -m c2bus`` is the ``c2bus`` command."""

import sys

from c2bus.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
