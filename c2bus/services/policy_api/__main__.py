import sys

from c2bus.adapters.lifecycle import run_service
from c2bus.services.policy_api.app import main

sys.exit(run_service("policy_api", main))
