"""``python -m loadtests``: the benchmark harness (see ``loadtests/harness.py``)."""

import sys

from .harness import main

sys.exit(main())
