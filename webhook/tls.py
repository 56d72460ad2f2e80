"""The serving TLS context (TLS 1.2+) from PEM files, reloaded in place when they change.

``load_cert_chain`` on a live ``SSLContext`` changes the certificate that new handshakes use,
so a rotated certificate is picked up without a restart. (The ``certs`` package will provide the
same for certificates it manages; the server only ever takes an ``ssl.SSLContext``.)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from pathlib import Path

from webhook.metrics import Metrics

log = logging.getLogger("kaito.webhook.tls")


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class FileCertReloader:
    """Reload ``ctx`` from the files when their modification times or sizes change."""

    def __init__(
        self, ctx: ssl.SSLContext, cert_file: Path, key_file: Path, metrics: Metrics | None = None
    ) -> None:
        self.ctx, self.cert_file, self.key_file, self.metrics = ctx, cert_file, key_file, metrics
        self._stamp = self._current()

    def _current(self) -> tuple[float, int, float, int]:
        c, k = self.cert_file.stat(), self.key_file.stat()
        return (c.st_mtime, c.st_size, k.st_mtime, k.st_size)

    def check(self) -> bool:
        """Reload if the files changed; True when a new certificate was loaded.

        The pair is copied to a private snapshot and checked on a scratch context first, so
        a half-written rotation (a new certificate with the old key) never reaches the live
        context: it is retried at the next check."""
        try:
            stamp = self._current()
            if stamp == self._stamp:
                return False
            with tempfile.TemporaryDirectory(prefix="kaito-tls-") as tmp:
                cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                cert.write_bytes(self.cert_file.read_bytes())
                key.write_bytes(self.key_file.read_bytes())
                probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                probe.load_cert_chain(str(cert), str(key))
                self.ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:  # a half-written pair: try again next time
            log.warning("serving certificate not reloaded: %s", exc)
            if self.metrics:
                self.metrics.tls_reloads.labels("error").inc()
            return False
        self._stamp = stamp
        if self.metrics:
            self.metrics.tls_reloads.labels("ok").inc()
        log.info("serving certificate reloaded from %s", self.cert_file)
        return True

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()  # on the loop thread: no handshake runs concurrently
