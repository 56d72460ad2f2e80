"""Workspace validation: the schema (``jsonschema``) and the semantic rules, as pure functions.

``validate_create(obj, ctx)`` and ``validate_update(old, new, ctx)`` return every problem at
once as a list of ``FieldError`` (empty when the object is fine). Each error names the field,
the bad value and the fix; ``str(error)`` is the sentence shown to ``kubectl`` users, and
``error.reason`` a short code for metrics.

Node facts for ``resource.preferredNodes`` come in through ``ValidationContext.nodes`` (the
webhook reads the Node objects; this package performs no I/O). Without them the node checks
are skipped.

One module per part of the Workspace: ``schema``, ``inference``, ``adapters``, ``resource``
(with ``fit``: does the model fit the instance type), ``updates`` (immutable fields), and
``workspace``, which runs them all; ``base`` holds the terms they share.
"""

from api.validation.base import FieldError, NodeFacts, ValidationContext
from api.validation.resource import preferred_node_names, selector_matches
from api.validation.schema import schema_errors
from api.validation.updates import update_errors
from api.validation.workspace import semantic_errors, validate_create, validate_update

__all__ = [
    "FieldError",
    "NodeFacts",
    "ValidationContext",
    "preferred_node_names",
    "schema_errors",
    "selector_matches",
    "semantic_errors",
    "update_errors",
    "validate_create",
    "validate_update",
]
