import sys

from c2bus.adapters.lifecycle import run_service
from c2bus.services.policy_api.app import main

if __name__ == "__main__":  # not again in its worker process, which imports this module too
    sys.exit(run_service("policy_api", main))
