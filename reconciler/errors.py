"""The reconciler's exception tree: every error it raises derives from ``ReconcilerError``."""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every reconciler error."""


class SettingsError(ReconcilerError):
    """A setting is missing or out of bounds; the message names it, the value and the fix."""


class KubeConfigError(ReconcilerError):
    """The kubeconfig (or in-cluster service account) cannot be used."""


class ApiError(ReconcilerError):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, *, what: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.what = what
        super().__init__(f"{what}: HTTP {status} {reason}: {message}" if what else message)


class NotFoundError(ApiError):
    """HTTP 404."""


class ConflictError(ApiError):
    """HTTP 409: a resourceVersion precondition or an apply conflict."""


class GoneError(ApiError):
    """HTTP 410: a watch's resourceVersion is too old; relist."""


class NotLeaderError(ReconcilerError):
    """A write was attempted by a replica that does not hold the lease."""


def api_error(status: int, reason: str, message: str, *, what: str = "") -> ApiError:
    """The most specific ``ApiError`` subclass for an HTTP status."""
    cls: type[ApiError] = {404: NotFoundError, 409: ConflictError, 410: GoneError}.get(
        status, ApiError
    )
    return cls(status, reason, message, what=what)
