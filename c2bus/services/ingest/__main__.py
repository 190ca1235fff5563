import sys

from c2bus.adapters.lifecycle import run_service
from c2bus.services.ingest.app import main

sys.exit(run_service("ingest", main))
