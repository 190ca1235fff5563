import sys

from c2bus.adapters.lifecycle import run_service
from c2bus.services.enforcer.app import main

if __name__ == "__main__":
    sys.exit(run_service("enforcer", main))
