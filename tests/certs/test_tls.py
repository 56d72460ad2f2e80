"""certs.tls against a real aiohttp HTTPS server and real client handshakes on 127.0.0.1.

The server is started once per test and never restarted; reloads swap the certificate inside the
SSLContext it already uses, and fresh handshakes must show the new serial number.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from certs.errors import CertReloadError
from certs.pki import Issued, cert_to_pem, certs_to_pem, make_ca, make_serving_cert
from certs.plan import CertBundle
from certs.tls import (
    ReloadableServerContext,
    _memfd_available,
    client_context,
    load_pem_chain,
    new_server_context,
    server_context,
)

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
DNS = ("kaito-webhook", "kaito-webhook.kaito-system.svc")


def _now() -> datetime:
    return datetime.now(UTC)  # real time: the client checks validity against the wall clock


def _ca(name: str) -> Issued:
    return make_ca(_now(), timedelta(days=2), common_name=name)


def _bundle(ca: Issued, *cas: Issued) -> CertBundle:
    serving = make_serving_cert(
        _now(), ca, dns_names=DNS, ip_addresses=(HOST,), validity=timedelta(days=1)
    )
    return CertBundle(
        cert_pem=serving.cert_pem,
        key_pem=serving.key_pem,
        ca_bundle_pem=certs_to_pem([c.cert for c in (ca, *cas)]),
    )


BODY = b"x" * (2 << 20)  # big enough that the client holds the connection until it reads it


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(body=BODY)


@asynccontextmanager
async def _serve(context: ssl.SSLContext) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/hello", _hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _handshake(port: int, ca_pem: bytes, server_name: str = HOST) -> tuple[int, str]:
    """A fresh TLS connection: (serial the server presented, protocol version)."""
    _reader, writer = await asyncio.open_connection(
        HOST, port, ssl=client_context(ca_pem), server_hostname=server_name
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number, ssl_object.version()
    finally:
        writer.close()
        await writer.wait_closed()


async def _get(session: aiohttp.ClientSession, port: int) -> int:
    """GET /hello; return the serial of the certificate on the connection used."""
    async with session.get(f"https://{HOST}:{port}/hello") as response:
        assert response.status == 200
        assert response.connection is not None  # still held until the body is read
        transport = response.connection.transport
        assert transport is not None
        der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert await response.read() == BODY
        return x509.load_der_x509_certificate(der).serial_number


def test_reload_swaps_the_certificate_of_a_running_server() -> None:
    ca = _ca("ca-one")
    first, second = _bundle(ca), _bundle(ca)
    assert first.serial != second.serial

    async def scenario() -> None:
        tls = ReloadableServerContext(first)
        live_context = tls.context
        async with _serve(tls.context) as port:
            assert await _handshake(port, first.ca_bundle_pem) == (first.serial, "TLSv1.3")
            for name in DNS:
                assert (await _handshake(port, first.ca_bundle_pem, name))[0] == first.serial
            connector = aiohttp.TCPConnector(ssl=client_context(first.ca_bundle_pem))
            async with aiohttp.ClientSession(connector=connector) as session:
                assert await _get(session, port) == first.serial

                assert tls.reload(second) is True
                assert tls.context is live_context
                assert tls.serial == second.serial

                # A fresh handshake on the same listening socket gets the new certificate ...
                assert (await _handshake(port, first.ca_bundle_pem))[0] == second.serial
                # ... while the kept-alive connection carries on with the one it negotiated.
                assert await _get(session, port) == first.serial
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_context(first.ca_bundle_pem))
            ) as fresh:
                assert await _get(fresh, port) == second.serial
            assert tls.reload(second) is False

    asyncio.run(scenario())


def test_reload_to_a_new_ca_needs_the_new_ca_in_the_clients_bundle() -> None:
    old_ca, new_ca = _ca("ca-old"), _ca("ca-new")
    first = _bundle(old_ca)
    rotated = _bundle(new_ca, old_ca)  # ca bundle: new first, old kept

    async def scenario() -> None:
        tls = ReloadableServerContext(first)
        async with _serve(tls.context) as port:
            # An apiserver that already has the overlap bundle accepts both certificates.
            assert (await _handshake(port, rotated.ca_bundle_pem))[0] == first.serial
            tls.reload(rotated)
            assert (await _handshake(port, rotated.ca_bundle_pem))[0] == rotated.serial
            # One that only trusts the old CA is refused: the new certificate really is served.
            with pytest.raises(ssl.SSLCertVerificationError):
                await _handshake(port, cert_to_pem(old_ca.cert))

    asyncio.run(scenario())


def test_unusable_material_is_refused_and_the_old_certificate_stays() -> None:
    ca = _ca("ca-one")
    first, second = _bundle(ca), _bundle(ca)
    mismatched = CertBundle(
        cert_pem=second.cert_pem, key_pem=first.key_pem, ca_bundle_pem=first.ca_bundle_pem
    )
    garbage = CertBundle(cert_pem=b"junk", key_pem=b"junk", ca_bundle_pem=b"")

    async def scenario() -> None:
        tls = ReloadableServerContext(first)
        async with _serve(tls.context) as port:
            with pytest.raises(CertReloadError, match="the key is not its key"):
                tls.reload(mismatched)
            with pytest.raises(CertReloadError, match="does not parse"):
                tls.reload(garbage)
            assert tls.serial == first.serial
            assert (await _handshake(port, first.ca_bundle_pem))[0] == first.serial

    asyncio.run(scenario())


def test_tls_1_2_is_the_minimum_and_works() -> None:
    bundle = _bundle(_ca("ca-one"))

    async def scenario() -> None:
        context = server_context(bundle)
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        async with _serve(context) as port:
            client = client_context(bundle.ca_bundle_pem)
            client.maximum_version = ssl.TLSVersion.TLSv1_2
            _reader, writer = await asyncio.open_connection(
                HOST, port, ssl=client, server_hostname=HOST
            )
            try:
                assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
            finally:
                writer.close()
                await writer.wait_closed()

    asyncio.run(scenario())


@pytest.mark.parametrize("in_memory", [True, False], ids=["memfd", "private-dir"])
def test_both_ways_of_loading_pem_serve(
    in_memory: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if in_memory and not _memfd_available():
        pytest.skip("memfd_create is not available on this platform")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bundle = _bundle(_ca("ca-one"))
    context = new_server_context()
    load_pem_chain(context, bundle.cert_pem, bundle.key_pem, in_memory=in_memory)
    assert list(tmp_path.iterdir()) == []  # nothing left behind (memfd never used the dir)

    async def scenario() -> None:
        async with _serve(context) as port:
            assert (await _handshake(port, bundle.ca_bundle_pem))[0] == bundle.serial

    asyncio.run(scenario())


def test_private_dir_is_private_while_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bundle = _bundle(_ca("ca-one"))
    modes: list[tuple[str, int]] = []

    class Spy(ssl.SSLContext):
        def load_cert_chain(self, certfile, keyfile=None, password=None):  # type: ignore[no-untyped-def]
            for path in (Path(certfile).parent, Path(certfile), Path(keyfile)):
                modes.append((path.name, path.stat().st_mode & 0o777))
            super().load_cert_chain(certfile, keyfile, password)

    load_pem_chain(Spy(ssl.PROTOCOL_TLS_SERVER), bundle.cert_pem, bundle.key_pem, in_memory=False)
    assert [mode for _name, mode in modes] == [0o700, 0o600, 0o600]
    assert list(tmp_path.iterdir()) == []
