"""Security: cluster isolation, TLS and mutual TLS, secrets kept out of every output,
and no exposed default secret.

The session-wide secret watch (``conftest.py``) already fails the run if any credential
shows up in any log record or error message; these tests add the reprs, the output of
a ``rainbow-aio serve`` process and of the CLI commands, and check what was collected so
far as an ordinary test as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from rainbow_aio import (
    AcceptStatus,
    DeniedError,
    InvalidArgumentError,
    Job,
    MissingCredentialError,
    RainbowClient,
    RainbowError,
    RainbowServer,
    Registration,
    RetryPolicy,
    ServerTLSConfig,
    TLSConfig,
    TLSError,
    UnavailableError,
)
from rainbow_aio.server import ServerStartError
from rainbow_aio.testing import ServerProcess

from ._secretscan import WATCH, SecretWatch

REGISTRATION_SECRET = "security-registration-secret-9c1e"
QUICK = RetryPolicy(max_attempts=2, initial_backoff=0.05, max_backoff=0.1)

# Names chosen to trip every way a lookup could match the wrong cluster: case, LIKE
# wildcards, SQL text, padding, NUL, look-alike unicode.
LOOK_ALIKES = [
    "alpha",
    "Alpha",
    "ALPHA",
    "alph_",
    "_lpha",
    "alp%",
    "%",
    "_",
    "alpha%",
    " alpha",
    "alpha ",
    "alpha\x00",
    "alpha'--",
    "alpha' OR '1'='1",
    "x' OR name LIKE '%",
    "\u0430lpha",  # starts with a Cyrillic a
]


# -- cluster isolation -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_and_client(**server: Any) -> AsyncIterator[tuple[RainbowServer, RainbowClient]]:
    async with (
        RainbowServer("127.0.0.1:0", secret=REGISTRATION_SECRET, **server) as srv,
        RainbowClient(srv.address, retry=QUICK, timeout=5.0) as client,
    ):
        yield srv, client


async def test_no_credential_of_one_cluster_reaches_another() -> None:
    async with server_and_client() as (_, client):
        regs: dict[str, Registration] = {}
        jobs: dict[str, int] = {}
        for name in LOOK_ALIKES:
            # every look-alike is a cluster of its own: none "already exists"
            regs[name] = await client.register(name, REGISTRATION_SECRET)
            job_id = await client.submit_job(name, regs[name].token, f"echo {name!r}")
            assert job_id is not None
            jobs[name] = job_id

        for mine, theirs in itertools.permutations(LOOK_ALIKES, 2):
            me = regs[mine]
            for credential in (me.token, me.secret):
                with pytest.raises(DeniedError):
                    await client.submit_job(theirs, credential, "evil")
                with pytest.raises(DeniedError):
                    await client.request_jobs(theirs, credential)
                with pytest.raises(DeniedError):
                    await client.accept_jobs(theirs, credential, [jobs[theirs]])
            # my own secret with their job id: not deleted, so not SUCCESS
            result = await client.accept_jobs(mine, me.secret, [jobs[theirs]])
            assert result.status is AcceptStatus.PARTIAL

        for name in LOOK_ALIKES:
            # a token is not a secret and a secret is not a token
            with pytest.raises(DeniedError):
                await client.request_jobs(name, regs[name].token)
            with pytest.raises(DeniedError):
                await client.submit_job(name, regs[name].secret, "evil")
            # and after all that, each cluster still has exactly its own job
            assert await client.request_jobs(name, regs[name].secret) == [
                Job(jobs[name], name, "", 1, 0, f"echo {name!r}")
            ]


async def test_registration_needs_the_registration_secret() -> None:
    async with server_and_client() as (_, client):
        for wrong in ["chocolate-cookies", REGISTRATION_SECRET.upper(), REGISTRATION_SECRET + " "]:
            WATCH.add(wrong)
            with pytest.raises(DeniedError):
                await client.register("intruder", wrong)
        with pytest.raises((DeniedError, MissingCredentialError, InvalidArgumentError)):
            await client.register("intruder", "")
        # nothing was created by the failed attempts
        await client.register("intruder", REGISTRATION_SECRET)


# -- no default secret on a public address ------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0"])
async def test_server_refuses_public_address_with_default_secret(address: str) -> None:
    server = RainbowServer(address)
    with pytest.raises(ServerStartError, match="non-loopback"):
        await server.start()
    assert not server.running


async def test_server_binds_public_address_when_allowed_or_with_own_secret() -> None:
    # binding 0.0.0.0 is fine; the test only ever sends traffic to 127.0.0.1
    for options in ({"allow_public_default_secret": True}, {"secret": REGISTRATION_SECRET}):
        async with (
            RainbowServer("0.0.0.0:0", **options) as server,
            RainbowClient(f"127.0.0.1:{server.port}", retry=QUICK, timeout=5.0) as client,
        ):
            await client.ping()


def test_serve_command_refuses_public_address_with_default_secret(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    proc = subprocess.run(
        [sys.executable, "-m", "rainbow_aio", "serve", "--address", "0.0.0.0:0", "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "non-loopback" in proc.stderr or "loopback" in proc.stderr


# -- TLS and mutual TLS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, client_ca: trustme.CA | None = None) -> ServerTLSConfig:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    return ServerTLSConfig(
        certificate_chain=cert.cert_chain_pems[0].bytes()
        + b"".join(p.bytes() for p in cert.cert_chain_pems[1:]),
        private_key=cert.private_key_pem.bytes(),
        client_ca=client_ca.cert_pem.bytes() if client_ca is not None else None,
    )


def client_tls(ca: trustme.CA, client_cert_ca: trustme.CA | None = None) -> TLSConfig:
    chain = key = None
    if client_cert_ca is not None:
        cert = client_cert_ca.issue_cert("client@example.org")
        chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
        key = cert.private_key_pem.bytes()
    return TLSConfig(
        root_certificates=ca.cert_pem.bytes(),
        certificate_chain=chain,
        private_key=key,
        server_name="localhost",
    )


async def full_round(client: RainbowClient, name: str) -> None:
    reg = await client.register(name, REGISTRATION_SECRET)
    job_id = await client.submit_job(name, reg.token, "echo over tls")
    assert [j.id for j in await client.request_jobs(name, reg.secret)] == [job_id]
    assert (await client.accept_jobs(name, reg.secret, [job_id])).all_accepted


async def refused(*clients: RainbowClient) -> list[RainbowError]:
    """Connecting (or a first call) fails with a typed transport error, for each client."""

    async def one(client: RainbowClient) -> RainbowError:
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.ping(timeout=3)
        except (TLSError, UnavailableError) as exc:
            return exc
        finally:
            await client.close()
        pytest.fail(f"{client!r} was not refused")

    return list(await asyncio.gather(*(one(c) for c in clients)))


async def test_tls_end_to_end(ca: trustme.CA, other_ca: trustme.CA) -> None:
    async with RainbowServer("127.0.0.1:0", secret=REGISTRATION_SECRET, tls=server_tls(ca)) as srv:
        async with RainbowClient(
            srv.address, tls=client_tls(ca), retry=QUICK, timeout=5.0
        ) as client:
            await full_round(client, "tls")
        opts: dict[str, Any] = {"retry": QUICK, "timeout": 5.0, "connect_timeout": 1}
        # plaintext against TLS, and TLS trusting the wrong CA: refused, typed
        _, wrong_ca = await refused(
            RainbowClient(srv.address, **opts),
            RainbowClient(srv.address, tls=client_tls(other_ca), **opts),
        )
        assert isinstance(wrong_ca, TLSError), repr(wrong_ca)


async def test_mutual_tls_end_to_end(ca: trustme.CA, other_ca: trustme.CA) -> None:
    tls = server_tls(ca, client_ca=ca)
    async with RainbowServer("127.0.0.1:0", secret=REGISTRATION_SECRET, tls=tls) as srv:
        async with RainbowClient(
            srv.address, tls=client_tls(ca, ca), retry=QUICK, timeout=5.0
        ) as client:
            await full_round(client, "mtls")
        opts: dict[str, Any] = {"retry": QUICK, "timeout": 5.0, "connect_timeout": 1}
        await refused(
            RainbowClient(srv.address, tls=client_tls(ca), **opts),  # no client certificate
            RainbowClient(srv.address, tls=client_tls(ca, other_ca), **opts),  # wrong issuer
            RainbowClient(srv.address, **opts),  # plaintext
        )


# -- secrets never in logs, reprs or errors ----------------------------------------------


def test_the_watch_finds_a_planted_secret() -> None:
    """The leak detector itself works: a credential in a log record is found."""
    watch = SecretWatch()
    watch.install()
    try:
        watch.add("0123456789abcdef-planted")
        logging.getLogger("rainbow_aio.test").debug("oops %s", "0123456789abcdef-planted")
    finally:
        watch.uninstall()
    assert watch.leaks() == [("log:rainbow_aio.test:DEBUG", "0123…(24 chars)")]


async def test_no_secret_in_logs_reprs_or_errors_of_a_whole_workflow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with server_and_client() as (server, client):
        reg = await client.register("quiet", REGISTRATION_SECRET)
        texts += [repr(reg), str(reg), repr(client), repr(server)]
        ids = [await client.submit_job("quiet", reg.token, f"echo {i}") for i in range(6)]
        async with client.poller("quiet", reg.secret, min_interval=0.01) as poller:
            texts += [repr(poller), repr(poller.stats)]
            for _ in ids[:3]:
                job = await asyncio.wait_for(poller.get(), 30)
                texts += [repr(job), str(job)]
                assert await job.accept()
            texts.append(repr(poller.stats))
        # every kind of refusal, with real credentials in the wrong places
        failing = [
            client.submit_job("quiet", reg.secret, "x"),
            client.request_jobs("quiet", reg.token),
            client.accept_jobs("quiet", reg.token, ids),
            client.register("quiet", REGISTRATION_SECRET),
            client.request_jobs("nope", reg.secret),
            client.submit_job("quiet", reg.token + "\ud800", "x"),
        ]
        for call in failing:
            with pytest.raises(RainbowError) as info:
                await call
            texts += [str(info.value), repr(info.value), repr(info.value.args)]
        # a poller whose secret is wrong stops with an error that must not show it
        wrong = "f" * 8 + reg.secret[8:]
        WATCH.add(wrong)
        with pytest.raises(RainbowError) as info:
            async with client.poller("quiet", wrong, min_interval=0.01) as bad:
                await asyncio.wait_for(bad.get(), 30)
        texts += [str(info.value), repr(info.value), repr(bad), repr(bad.stats)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(TLSConfig(certificate_chain=b"c", private_key=b"PRIVATE-KEY-BYTES-123"))]
    WATCH.add("PRIVATE-KEY-BYTES-123")
    WATCH.add_texts("test:reprs-and-errors", texts)
    assert WATCH.leaks() == []


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rainbow_aio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_no_secret_in_serve_or_cli_output(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "s.db", secret=REGISTRATION_SECRET)
    try:
        await server.start()
        async with RainbowClient(server.address, retry=QUICK, timeout=5.0) as client:
            reg = await client.register("cli", REGISTRATION_SECRET)
            other = await client.register("cli-other", REGISTRATION_SECRET)
            for wrong in ("wrong-registration-secret", "Chocolate-Cookies-x"):
                WATCH.add(wrong)
                with pytest.raises(DeniedError):
                    await client.register("cli-x", wrong)
            await client.submit_job("cli", reg.token, "echo from client")
            with pytest.raises(DeniedError):
                await client.submit_job("cli", other.token, "evil")
            with pytest.raises(DeniedError):
                await client.request_jobs("cli", other.secret)
        host = ["--host", server.address, "--cluster", "cli"]
        outputs = [
            await asyncio.to_thread(run_cli, "submit", *host, "--token", reg.token, "echo", "x"),
            await asyncio.to_thread(run_cli, "submit", *host, "--token", other.token, "echo"),
            await asyncio.to_thread(
                run_cli, "poll", *host, "--secret", reg.secret, "--accept", "1"
            ),
            await asyncio.to_thread(run_cli, "poll", *host, "--secret", other.secret),
            await asyncio.to_thread(
                run_cli, "register", *host, "--secret", "wrong-registration-secret"
            ),
        ]
        assert [p.returncode == 0 for p in outputs] == [True, False, True, False, False]
        for proc in outputs:
            assert "Traceback" not in proc.stderr
            WATCH.add_text(f"cli:{proc.args[3]}:stderr", proc.stderr)
            WATCH.add_text(f"cli:{proc.args[3]}:stdout", proc.stdout)
    finally:
        await server.stop()
    assert "server listening" in server.output
    WATCH.add_text("serve:output", server.output)
    assert WATCH.leaks() == []


def test_registration_output_is_the_one_place_credentials_are_shown() -> None:
    """``register`` prints the credentials on purpose (once); Registration hides them."""
    reg = Registration("c", token="tok-" + "1" * 32, secret="sec-" + "2" * 32)
    assert "1" * 32 not in repr(reg)
    assert "2" * 32 not in repr(reg)
    assert "1" * 32 not in str(reg)
