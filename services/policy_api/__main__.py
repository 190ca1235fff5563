import sys

from ..runtime.lifecycle import run_service
from .app import main

sys.exit(run_service("policy_api", main))
