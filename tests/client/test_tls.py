"""TLS: server-authenticated, mutual, and the clear failures when the two sides disagree.

Certificates are made at test time with trustme.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from rainbow_aio import (
    RainbowClient,
    RainbowServer,
    ServerTLSConfig,
    TLSConfig,
    TLSError,
    UnavailableError,
)


def server_tls(ca: trustme.CA, *, mutual: bool = False) -> ServerTLSConfig:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    return ServerTLSConfig(
        certificate_chain=b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
        private_key=leaf.private_key_pem.bytes(),
        client_ca=ca.cert_pem.bytes() if mutual else None,
    )


def client_tls(ca: trustme.CA, *, with_cert: bool = False) -> TLSConfig:
    if not with_cert:
        return TLSConfig(root_certificates=ca.cert_pem.bytes())
    leaf = ca.issue_cert("keebler-cluster")
    return TLSConfig(
        root_certificates=ca.cert_pem.bytes(),
        certificate_chain=b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
        private_key=leaf.private_key_pem.bytes(),
    )


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[RainbowServer]:
    async with RainbowServer("127.0.0.1:0", tls=server_tls(ca)) as server:
        yield server


@pytest.fixture
async def mtls_server(ca: trustme.CA) -> AsyncIterator[RainbowServer]:
    async with RainbowServer("127.0.0.1:0", tls=server_tls(ca, mutual=True)) as server:
        yield server


async def test_server_authenticated_tls(tls_server: RainbowServer, ca: trustme.CA) -> None:
    async with RainbowClient(tls_server.address, tls=client_tls(ca)) as client:
        reg = await client.register("alpha", tls_server.secret)
        job_id = await client.submit_job("alpha", reg.token, "echo secure")
        jobs = await client.request_jobs("alpha", reg.secret)
        assert [job.id for job in jobs] == [job_id]
        assert "tls" in repr(client)


async def test_mutual_tls(mtls_server: RainbowServer, ca: trustme.CA) -> None:
    tls = client_tls(ca, with_cert=True)
    assert tls.mutual
    async with RainbowClient(mtls_server.address, tls=tls) as client:
        assert await client.ping() > 0
        assert "mtls" in repr(client)


async def test_mutual_tls_server_refuses_a_client_without_certificate(
    mtls_server: RainbowServer, ca: trustme.CA
) -> None:
    client = RainbowClient(mtls_server.address, tls=client_tls(ca), connect_timeout=1)
    with pytest.raises(UnavailableError) as info:
        await client.connect()
    assert mtls_server.address in str(info.value)
    assert "requires a client certificate" in str(info.value)


async def test_plaintext_client_against_tls_server_gets_a_hint(
    tls_server: RainbowServer,
) -> None:
    client = RainbowClient(tls_server.address, connect_timeout=0.5)
    with pytest.raises(UnavailableError) as info:
        await client.connect()
    message = str(info.value)
    assert tls_server.address in message
    assert "if the server uses TLS, pass tls=TLSConfig" in message


async def test_tls_client_against_plaintext_server_is_a_tls_error(
    rainbow_server: RainbowServer, ca: trustme.CA
) -> None:
    # fails at the first handshake, without waiting for the connect timeout
    client = RainbowClient(rainbow_server.address, tls=client_tls(ca), connect_timeout=30)
    with pytest.raises(TLSError, match="TLS handshake with the server") as info:
        await client.connect()
    assert not info.value.retryable


async def test_untrusted_server_certificate_is_a_tls_error(tls_server: RainbowServer) -> None:
    other_ca = trustme.CA()
    client = RainbowClient(tls_server.address, tls=client_tls(other_ca), connect_timeout=30)
    with pytest.raises(TLSError, match="CERTIFICATE_VERIFY_FAILED"):
        await client.connect()


async def test_server_name_override(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("rainbow.internal")  # no IP address in the certificate
    tls = ServerTLSConfig(
        certificate_chain=b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
        private_key=leaf.private_key_pem.bytes(),
    )
    async with RainbowServer("127.0.0.1:0", tls=tls) as server:
        config = TLSConfig(root_certificates=ca.cert_pem.bytes(), server_name="rainbow.internal")
        async with RainbowClient(server.address, tls=config) as client:
            assert await client.ping() > 0


def test_from_files_and_a_repr_without_the_key(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = TLSConfig.from_files(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    assert config.private_key == leaf.private_key_pem.bytes()
    assert config.mutual
    text = repr(config)
    assert "private_key=<hidden>" in text
    assert "PRIVATE KEY" not in text
    assert leaf.private_key_pem.bytes().decode() not in text
    assert TLSConfig.from_files(tmp_path / "ca.pem").certificate_chain is None
