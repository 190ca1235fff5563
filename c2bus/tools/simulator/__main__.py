"""``python -m c2bus.tools.simulator``: the simulator as a process (``c2bus up`` runs it so)."""

import sys

from c2bus.tools.simulator.command import main

if __name__ == "__main__":
    sys.exit(main())
