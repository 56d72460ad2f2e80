"""The exception tree of the ``api`` package.

Every message names the bad value and, where there is one, the fix.
"""

from __future__ import annotations


class KaitoApiError(Exception):
    """Base of every error raised by ``api``."""


class WorkspaceParseError(KaitoApiError, ValueError):
    """A dict does not have the Workspace's shape (raised by ``Workspace.from_dict``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class StrengthError(KaitoApiError, ValueError):
    """An adapter strength is not a decimal string in the accepted range."""


class QuantityError(KaitoApiError, ValueError):
    """A Kubernetes resource quantity (``24Gi``, ``16G``, ``1``) cannot be parsed."""


class CatalogError(KaitoApiError):
    """A preset or SKU catalog data file is malformed (a packaging bug, or a bad admin SKU)."""


class ConfigError(KaitoApiError):
    """The admin defaults ConfigMap is malformed; ``problems`` holds one line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid admin configuration: " + "; ".join(problems))
        self.problems = problems
