"""TLS server contexts from PEM bytes, reloadable in place.

:class:`ReloadableServerContext` owns one :class:`ssl.SSLContext` (TLS 1.2 minimum). Give its
``.context`` to the server once; :meth:`~ReloadableServerContext.reload` calls
``load_cert_chain`` again on that *same* context, so a running aiohttp server keeps its sockets and
every new handshake presents the new certificate (connections already open keep theirs)::

    tls = ReloadableServerContext(bundle)                       # bundle: certs.plan.CertBundle
    site = web.TCPSite(runner, "0.0.0.0", 9443, ssl_context=tls.context)
    await site.start()
    ...
    tls.reload(new_bundle)      # e.g. as CertManager.run's on_change; returns False if unchanged

``ssl`` can only load certificates from files, so the PEM is handed over through anonymous
in-memory files (``memfd_create``; the key never touches a file system) where the platform has
them, else through a private temporary directory (mode 0700, files 0600) removed right after.

New material is checked before it touches the live context (parses, key matches certificate, loads
into a throwaway context); if it does not, :class:`~certs.errors.CertReloadError` is raised and the
old certificate stays in use. Call ``reload`` from the event loop that serves (as ``run`` does).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
from pathlib import Path

from certs.errors import CertMaterialError, CertReloadError
from certs.pki import key_algorithm_of, key_matches, parse_cert, parse_private_key
from certs.plan import CertBundle

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _memfd_available() -> bool:
    return hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir()


def _load_via_memfd(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    fds: list[int] = []
    try:
        for label, data in (("kaito-tls-crt", cert_pem), ("kaito-tls-key", key_pem)):
            fd = os.memfd_create(label, os.MFD_CLOEXEC)
            fds.append(fd)
            _write_all(fd, data)
        context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)


def _load_via_private_dir(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="kaito-tls-") as tmp:  # created with mode 0700
        paths = []
        for filename, data in (("tls.crt", cert_pem), ("tls.key", key_pem)):
            path = os.path.join(tmp, filename)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])


def load_pem_chain(
    context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, *, in_memory: bool | None = None
) -> None:
    """``context.load_cert_chain`` from PEM bytes. ``in_memory``: force (True) or forbid (False)
    the memfd path; ``None`` picks memfd when available."""
    use_memfd = _memfd_available() if in_memory is None else in_memory
    if use_memfd:
        _load_via_memfd(context, cert_pem, key_pem)
    else:
        _load_via_private_dir(context, cert_pem, key_pem)


def new_server_context() -> ssl.SSLContext:
    """An empty server context: TLS 1.2 minimum, OpenSSL's default secure ciphers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    return context


def server_context(bundle: CertBundle) -> ssl.SSLContext:
    """A server context serving ``bundle`` (fixed; see :class:`ReloadableServerContext`)."""
    context = new_server_context()
    _checked_load(context, bundle)
    return context


def client_context(ca_bundle_pem: bytes) -> ssl.SSLContext:
    """A client context that trusts only ``ca_bundle_pem`` and checks host names (for tests and
    tools that call the webhook)."""
    context = ssl.create_default_context(cadata=ca_bundle_pem.decode("ascii"))
    context.minimum_version = MINIMUM_VERSION
    return context


def _checked_load(context: ssl.SSLContext, bundle: CertBundle) -> None:
    try:
        cert = parse_cert(bundle.cert_pem, "serving certificate")
        key = parse_private_key(bundle.key_pem, "serving key")
    except CertMaterialError as exc:
        raise CertReloadError(f"refusing to load the new serving material: {exc}") from None
    if not key_matches(cert, key):
        raise CertReloadError(
            f"refusing to load serving certificate serial {cert.serial_number:x}: the key is not "
            "its key"
        )
    try:
        load_pem_chain(new_server_context(), bundle.cert_pem, bundle.key_pem)  # trial run
        load_pem_chain(context, bundle.cert_pem, bundle.key_pem)
    except (ssl.SSLError, OSError) as exc:
        raise CertReloadError(
            f"OpenSSL refused serving certificate serial {cert.serial_number:x}: {exc}"
        ) from exc


class ReloadableServerContext:
    """One server ``SSLContext`` whose certificate can be replaced while the server runs."""

    def __init__(self, bundle: CertBundle) -> None:
        self.context = new_server_context()
        _checked_load(self.context, bundle)
        self._bundle = bundle
        self._lock = threading.Lock()

    @property
    def bundle(self) -> CertBundle:
        """The bundle currently loaded."""
        return self._bundle

    @property
    def serial(self) -> int:
        """Serial number of the certificate new handshakes get."""
        return self._bundle.serial

    def reload(self, bundle: CertBundle) -> bool:
        """Load ``bundle``'s certificate and key into the live context if they differ from the
        loaded ones; return whether anything was loaded. Raises :class:`CertReloadError` (the old
        certificate stays in use) when the new material is unusable."""
        with self._lock:
            old = self._bundle
            if bundle.cert_pem == old.cert_pem and bundle.key_pem == old.key_pem:
                self._bundle = bundle  # the CA bundle may differ; nothing to load
                return False
            _checked_load(self.context, bundle)
            old_algorithm = key_algorithm_of(old.cert)
            new_algorithm = key_algorithm_of(bundle.cert)
            if old_algorithm != new_algorithm:
                log.warning(
                    "serving key algorithm changed from %s to %s: OpenSSL keeps one certificate "
                    "per key type, so clients may still get the old %s certificate until the "
                    "server restarts",
                    old_algorithm,
                    new_algorithm,
                    old_algorithm,
                )
            self._bundle = bundle
            log.info("TLS context reloaded: serial %x -> %x", old.serial, bundle.serial)
            return True
