"""The exception tree of the ``certs`` package.

Everything the package raises on purpose derives from :class:`CertError`, so a caller can catch
one type::

    CertError
    ├── CertConfigError        a setting or argument is out of bounds (also a ValueError)
    ├── CertMaterialError      PEM that does not parse, a key that does not match its certificate
    │   └── CertVerificationError   a certificate chain that does not verify
    ├── CertReloadError        the TLS context refused new material (the old one stays in use)
    └── CertKubeError          the Kubernetes API refused or failed a call
        ├── CertPermissionError     HTTP 403: an RBAC verb is missing
        ├── CertNotFoundError       a namespace or webhook configuration does not exist
        └── CertConflictError       another writer kept winning (optimistic concurrency)

Messages name the object (Secret ``ns/name``, webhook configuration ``kind/name``), the bad value
and the fix.
"""

from __future__ import annotations


class CertError(Exception):
    """Base class of every error the ``certs`` package raises on purpose."""


class CertConfigError(CertError, ValueError):
    """A setting or an argument is invalid (wrong type, out of bounds, inconsistent)."""


class CertMaterialError(CertError):
    """Certificate or key material is malformed or inconsistent."""


class CertVerificationError(CertMaterialError):
    """A serving certificate does not verify against the CA bundle for the wanted name."""


class CertReloadError(CertError):
    """The TLS server context refused new material; the previously loaded material stays in use."""


class CertKubeError(CertError):
    """A call to the Kubernetes API failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CertPermissionError(CertKubeError):
    """The apiserver answered 403 Forbidden: the ServiceAccount lacks an RBAC verb."""


class CertNotFoundError(CertKubeError):
    """A namespace or a webhook configuration that the settings name does not exist."""


class CertConflictError(CertKubeError):
    """A write lost an optimistic-concurrency race (HTTP 409) too many times in a row."""
