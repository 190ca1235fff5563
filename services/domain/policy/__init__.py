"""The alignment-policy engine: a versioned policy set, compiled once, evaluated purely.

``model`` is the document (what operators write), ``compiler`` validates it and builds the
lookup tables, ``evaluator`` decides one directive at a given time with given approvals.
"""

from .compiler import (
    CompiledPolicy,
    PolicyInvalid,
    PolicyIssue,
    compile_policy,
    load_policy,
    load_policy_document,
)
from .evaluator import Approval, DirectiveContext, PolicyEvaluator

__all__ = [
    "Approval",
    "CompiledPolicy",
    "DirectiveContext",
    "PolicyEvaluator",
    "PolicyInvalid",
    "PolicyIssue",
    "compile_policy",
    "load_policy",
    "load_policy_document",
]
