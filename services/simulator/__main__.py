"""``python -m services.simulator``: the simulator as a process (``c2bus up`` runs it so)."""

import sys

from ..cli import main

sys.exit(main(["sim", *sys.argv[1:]]))
