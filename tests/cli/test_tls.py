"""The command line over TLS and mutual TLS (certificates made by trustme)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from rainbow_aio.server import RainbowServer, ServerTLSConfig

from ._run import cli
from .conftest import SECRET


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pems(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    client = ca.issue_cert("client@example.org")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    client.private_key_pem.write_to_path(tmp_path / "client-key.pem")
    (tmp_path / "client.pem").write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    return {name: str(tmp_path / f"{name}.pem") for name in ("ca", "client", "client-key")}


async def start(ca: trustme.CA, *, mutual: bool) -> RainbowServer:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    tls = ServerTLSConfig(
        certificate_chain=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        private_key=cert.private_key_pem.bytes(),
        client_ca=ca.cert_pem.bytes() if mutual else None,
    )
    server = RainbowServer("127.0.0.1:0", secret=SECRET, tls=tls)
    await server.start()
    return server


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[RainbowServer]:
    server = await start(ca, mutual=False)
    try:
        yield server
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def mtls_server(ca: trustme.CA) -> AsyncIterator[RainbowServer]:
    server = await start(ca, mutual=True)
    try:
        yield server
    finally:
        await server.stop(grace=None)


async def test_register_over_tls_with_a_private_ca(
    tls_server: RainbowServer, pems: dict[str, str]
) -> None:
    result = await cli(
        "register", "--host", tls_server.address, "--secret", SECRET, "--tls-ca", pems["ca"]
    )
    assert result.code == 0, result.err
    assert result.lines[2] == "status: REGISTER_SUCCESS"


async def test_plaintext_against_tls_is_one_line_about_tls(tls_server: RainbowServer) -> None:
    result = await cli("register", "--host", tls_server.address, "--timeout", "1")
    assert result.code == 1
    assert result.err.splitlines() == [
        f"rainbow-aio: error: {tls_server.address} accepted the connection but closed it "
        "before gRPC started — if the server uses TLS, pass --tls-ca (or --tls for a "
        "publicly trusted certificate)"
    ]


async def test_a_server_name_that_does_not_match_the_certificate_is_named(
    tls_server: RainbowServer, pems: dict[str, str]
) -> None:
    """Not "nothing answers at ...": the server answered, with a certificate for
    another name."""
    result = await cli(
        "register", "--host", tls_server.address, "--secret", SECRET, "--tls-ca", pems["ca"],
        "--tls-server-name", "wrong.example", "--timeout", "2",
    )  # fmt: skip
    assert result.code == 1
    assert result.err.splitlines()[0] == (
        f"rainbow-aio: error: the TLS certificate of {tls_server.address} is not for the name "
        "this command checked — give --tls-server-name the name in the server's certificate"
    )


async def test_mutual_tls_needs_the_client_certificate(
    mtls_server: RainbowServer, pems: dict[str, str]
) -> None:
    base = ("register", "--host", mtls_server.address, "--secret", SECRET)
    with_cert = await cli(
        *base, "--tls-ca", pems["ca"], "--tls-cert", pems["client"], "--tls-key", pems["client-key"]
    )
    assert with_cert.code == 0, with_cert.err
    without = await cli(*base, "--tls-ca", pems["ca"], "--timeout", "1")
    assert without.code == 1
    [line] = without.err.splitlines()
    assert line.endswith("pass --tls-cert and --tls-key")


async def test_an_unreadable_certificate_file_is_a_bad_command_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = await cli("poll", "--secret", "s", "--tls-ca", str(missing))
    assert result.code == 2
    assert result.out == ""
    assert result.err.splitlines() == [
        f"rainbow-aio poll: error: argument --tls-ca: cannot read {str(missing)!r}: "
        "No such file or directory (see: rainbow-aio poll --help)"
    ]


async def test_a_client_certificate_without_its_key_is_a_bad_command_line(
    pems: dict[str, str],
) -> None:
    result = await cli("poll", "--secret", "s", "--tls-cert", pems["client"])
    assert result.code == 2
    assert result.out == ""
    [line] = result.err.splitlines()
    assert "--tls-cert and --tls-key go together" in line
