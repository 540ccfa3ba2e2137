"""TLS and mutual TLS with certificates from trustme, through raw grpc.aio channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer, ServerTLSConfig
from rainbow_aio.testing import ServerProcess

from ._helpers import SECRET


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client@example.org")


def tls_config(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ServerTLSConfig:
    return ServerTLSConfig(
        certificate_chain=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        private_key=cert.private_key_pem.bytes(),
        client_ca=client_ca.cert_pem.bytes() if client_ca is not None else None,
    )


def credentials(ca: trustme.CA, client: trustme.LeafCert | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=client.private_key_pem.bytes(),
        certificate_chain=b"".join(blob.bytes() for blob in client.cert_chain_pems),
    )


async def register(channel: grpc.aio.Channel, deadline: float = 10) -> pb.RegisterResponse:
    stub = pb_grpc.RainbowSchedulerStub(channel)
    resp: pb.RegisterResponse = await stub.Register(
        pb.RegisterRequest(name="alpha", secret=SECRET), timeout=deadline
    )
    return resp


@pytest.fixture
async def tls_server(ca: trustme.CA, server_cert: trustme.LeafCert) -> AsyncIterator[RainbowServer]:
    async with RainbowServer(secret=SECRET, tls=tls_config(server_cert)) as server:
        yield server


@pytest.fixture
async def mtls_server(
    ca: trustme.CA, server_cert: trustme.LeafCert
) -> AsyncIterator[RainbowServer]:
    async with RainbowServer(secret=SECRET, tls=tls_config(server_cert, ca)) as server:
        yield server


async def test_tls_client_trusting_the_ca_is_served(
    tls_server: RainbowServer, ca: trustme.CA
) -> None:
    async with grpc.aio.secure_channel(tls_server.address, credentials(ca)) as channel:
        resp = await register(channel)
    assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS


async def test_tls_server_refuses_plaintext(tls_server: RainbowServer) -> None:
    async with grpc.aio.insecure_channel(tls_server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(channel, deadline=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_client_with_another_ca_is_refused(tls_server: RainbowServer) -> None:
    async with grpc.aio.secure_channel(tls_server.address, credentials(trustme.CA())) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(channel, deadline=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_client_with_certificate_is_served(
    mtls_server: RainbowServer, ca: trustme.CA, client_cert: trustme.LeafCert
) -> None:
    creds = credentials(ca, client_cert)
    async with grpc.aio.secure_channel(mtls_server.address, creds) as channel:
        resp = await register(channel)
    assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS


async def test_mutual_tls_client_without_certificate_is_refused(
    mtls_server: RainbowServer, ca: trustme.CA
) -> None:
    async with grpc.aio.secure_channel(mtls_server.address, credentials(ca)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(channel, deadline=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_client_certificate_from_another_ca_is_refused(
    mtls_server: RainbowServer, ca: trustme.CA
) -> None:
    stranger = trustme.CA().issue_cert("client@example.org")
    async with grpc.aio.secure_channel(mtls_server.address, credentials(ca, stranger)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(channel, deadline=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_serve_command_with_mutual_tls(
    tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert, client_cert: trustme.LeafCert
) -> None:
    cert, key, client_ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    server_cert.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(client_ca))
    args = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(client_ca)]
    async with ServerProcess(tmp_path / "r.db", secret=SECRET, args=args) as proc:
        creds = credentials(ca, client_cert)
        async with grpc.aio.secure_channel(proc.address, creds) as channel:
            resp = await register(channel)
        assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS
        async with grpc.aio.secure_channel(proc.address, credentials(ca)) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await register(channel, deadline=5)
    assert "BEGIN" not in proc.output  # no key material in the log


def test_tls_config_repr_hides_key_material(server_cert: trustme.LeafCert) -> None:
    assert "PRIVATE" not in repr(tls_config(server_cert))
