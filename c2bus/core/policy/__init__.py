"""The alignment-policy engine: a versioned policy set, compiled once, evaluated purely.

``model`` is the document (what operators write), ``compiler`` validates it and builds the
lookup tables, ``evaluator`` decides one directive at a given time with given approvals.
Import from the modules; this package file stays empty so the event contracts can use the
document model without pulling in the engine.
"""
