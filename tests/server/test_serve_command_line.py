"""``rainbow-aio serve`` as a careless operator meets it (issue 21): exit codes and
one-line messages of a bad command line, the registration secret out of the process
list, and ``--cleanup`` of a database file another server uses. Real processes only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import trustme

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.testing import ServerProcess

from ._helpers import SECRET, listed, register, submit


async def run_serve(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if not k.startswith("RAINBOW_")}
    child.update(env or {})
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rainbow_aio", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=child,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rainbow-aio serve: error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca, other = trustme.CA(), trustme.CA()
    leaf, stranger = ca.issue_cert("127.0.0.1"), other.issue_cert("127.0.0.1")
    where = tmp_path_factory.mktemp("pems")
    files = {
        "cert": b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
        "key": leaf.private_key_pem.bytes(),
        "other-key": stranger.private_key_pem.bytes(),
        "ca": ca.cert_pem.bytes(),
        "garbage": b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    }
    for name, data in files.items():
        (where / name).write_bytes(data)
    return {name: where / name for name in files}


BAD = [
    (("--address", "no-port"), "--address"),
    (("--address", "127.0.0.1:70000"), "--address"),
    (("--address", "::1:5"), "--address"),
    (("--secret", ""), "--secret"),
    (("--secret", "@/nonexistent/secret"), "--secret"),
    (("--max-response-bytes", "99999999999"), "--max-response-bytes"),
    (("--max-accept-ids", "0"), "--max-accept-ids"),
    (("--max-held-bytes", "x"), "--max-held-bytes"),
    (("--max-calls-in-flight", "0"), "--max-calls-in-flight"),
    (("--tls-cert", "/nonexistent/cert", "--tls-key", "/nonexistent/key"), "--tls-cert"),
]


@pytest.mark.parametrize(("args", "named"), BAD)
async def test_a_bad_command_line_exits_2_in_one_line(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    db = tmp_path / "r.db"
    result = await run_serve("--db", str(db), *args)
    one_line(result, 2, named)
    assert not db.exists()


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (("cert",), "--tls-cert and --tls-key go together"),
        (("cert", "other-key"), "the key does not match the certificate"),
        (("cert", "garbage"), "--tls-cert/--tls-key"),
        (("garbage", "key"), "--tls-cert/--tls-key"),
        (("cert", "key", "garbage"), "--tls-client-ca"),
    ],
)
async def test_tls_mistakes_are_named_in_one_line_without_grpc_log_lines(
    tmp_path: Path, pems: dict[str, Path], files: tuple[str, ...], named: str
) -> None:
    flags = ("--tls-cert", "--tls-key", "--tls-client-ca")
    args = [
        part
        for flag, name in zip(flags[: len(files)], files, strict=True)
        for part in (flag, str(pems[name]))
    ]
    result = await run_serve("--address", "127.0.0.1:0", "--db", str(tmp_path / "r.db"), *args)
    one_line(result, 2, named)


async def test_the_registration_secret_comes_from_the_environment(tmp_path: Path) -> None:
    """ServerProcess gives the secret as RAINBOW_REGISTRATION_SECRET: it works, and it
    is nowhere in the server's process list entry."""
    async with ServerProcess(tmp_path / "r.db", secret=SECRET) as proc:
        cmdline = await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)
        assert SECRET.encode() not in cmdline
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = pb_grpc.RainbowSchedulerStub(channel)
            resp = await stub.Register(pb.RegisterRequest(name="a", secret=SECRET), timeout=10)
            assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS
        assert SECRET not in proc.output


async def test_the_registration_secret_comes_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-a-file\n")
    proc = ServerProcess(tmp_path / "r.db", args=["--secret", f"@{tmp_path / 'secret'}"])
    proc.secret = "not this one"  # what the environment says; the option wins
    async with proc, grpc.aio.insecure_channel(proc.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        resp = await stub.Register(pb.RegisterRequest(name="a", secret="from-a-file"), timeout=10)
        assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Register(pb.RegisterRequest(name="b", secret="not this one"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Register(pb.RegisterRequest(name="c", secret=f"@{tmp_path}/secret"))


async def test_cleanup_of_a_file_in_use_fails_and_the_first_server_keeps_its_data(
    tmp_path: Path,
) -> None:
    db = tmp_path / "r.db"
    async with ServerProcess(db, secret=SECRET) as proc:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = pb_grpc.RainbowSchedulerStub(channel)
            alpha = await register(stub, "alpha")
            job = await submit(stub, alpha)
            result = await run_serve(
                "--address", "127.0.0.1:0", "--db", str(db), "--cleanup",
                env={"RAINBOW_REGISTRATION_SECRET": SECRET},
            )  # fmt: skip
            one_line(result, 1, "database is locked", "another server")
            later = await submit(stub, alpha, "after the failed cleanup")
        assert await proc.terminate() == 0
        await proc.start()
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = pb_grpc.RainbowSchedulerStub(channel)
            assert sorted(await listed(stub, alpha)) == [job, later]
