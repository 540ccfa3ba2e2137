"""``rainbow-aio serve`` as a real process: persistence, --cleanup, start-up failures and
clean shutdown on signals. Uses ServerProcess (rainbow_aio.testing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer
from rainbow_aio.testing import ServerProcess, ServerProcessError

from ._helpers import SECRET, Cluster, listed, register, submit


@asynccontextmanager
async def connect(address: str) -> AsyncIterator[pb_grpc.RainbowSchedulerStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield pb_grpc.RainbowSchedulerStub(channel)


async def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rainbow_aio", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rainbow-aio serve: error: ")
    for needle in needles:
        assert needle in lines[0]


async def test_restart_keeps_clusters_credentials_and_jobs_and_ids_keep_increasing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "rainbow.db"
    async with ServerProcess(db, secret=SECRET) as proc:
        first_output = proc.output
        async with connect(proc.address) as stub:
            alpha = await register(stub, "alpha")
            ids = [await submit(stub, alpha, f"job {n}") for n in range(3)]
            acc = await stub.AcceptJobs(
                pb.AcceptJobsRequest(cluster="alpha", secret=alpha.secret, jobids=[ids[-1]])
            )
            assert acc.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS

        assert await proc.terminate() == 0
        await proc.start()  # same port, same file
        async with connect(proc.address) as stub:
            again = await stub.Register(pb.RegisterRequest(name="alpha", secret=SECRET))
            assert again.status == pb.RegisterResponse.REGISTER_EXISTS
            assert sorted(await listed(stub, alpha)) == ids[:2]
            fourth = await submit(stub, alpha, "after restart")
            assert fourth > ids[-1]  # the accepted id is not reused

        # a SIGKILL loses nothing that was acknowledged
        assert await proc.kill() == -signal.SIGKILL
        await proc.start()
        async with connect(proc.address) as stub:
            jobs = await listed(stub, alpha)
            assert sorted(jobs) == [*ids[:2], fourth]
            assert json.loads(jobs[fourth])["command"] == "after restart"
            assert await submit(stub, alpha) > fourth

        await proc.stop()
        await proc.start(cleanup=True)
        async with connect(proc.address) as stub:
            fresh = await register(stub, "alpha")
            assert fresh.token != alpha.token
            assert await listed(stub, fresh) == {}
            assert await submit(stub, fresh) == 1

    assert not proc.running
    lines = [line.split(" ", 2)[2] for line in first_output.splitlines()]
    assert lines == [
        "creating 🌈️ server...",
        "✨️ creating rainbow.db...",
        "   rainbow.db file created",
        "   create cluster table...",
        "   cluster table created",
        "   create jobs table...",
        "   jobs table created",
        f"starting scheduler server: rainbow-aio {__import__('rainbow_aio').__version__}",
        "limits: 500 calls in flight holding 134217728 bytes, 1000 queued writes, "
        "268435456-byte answers, 100000 ids per accept, 1000 calls per connection",
        f"server listening: {proc.address}",
    ]
    # Go's log format: YYYY/MM/DD HH:MM:SS
    assert all(
        len(line) > 20 and line[4] == "/" and line[7] == "/" and line[13] == ":"
        for line in first_output.splitlines()
    )
    assert SECRET not in first_output


async def test_cleanup_flag_starts_empty(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with ServerProcess(db, secret=SECRET) as proc, connect(proc.address) as stub:
        cluster = await register(stub, "alpha")
        await submit(stub, cluster)
    async with ServerProcess(db, secret=SECRET, cleanup=True) as proc:
        assert "--cleanup" in proc.command()
        async with connect(proc.address) as stub:
            resp = await stub.Register(pb.RegisterRequest(name="alpha", secret=SECRET))
            assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS


async def test_sigterm_lets_a_call_in_flight_finish_then_exits_zero(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path / "r.db", secret=SECRET, args=["--grace", "20"]) as proc:
        async with connect(proc.address) as stub:
            call = stub.Stream(timeout=30)
            await call.write(pb.Request(content=pb.Content(id="before")))
            assert (await call.read()).request_id == "before"
            proc.send_signal(signal.SIGTERM)
            await proc.wait_for_output("SIGTERM received")
            # the open call is still served during the grace period
            await call.write(pb.Request(content=pb.Content(id="during")))
            resp = await call.read()
            assert resp.request_id == "during"
            assert resp.message_count == 2
            await call.done_writing()
            assert await call.code() == grpc.StatusCode.UNKNOWN
            assert await call.details() == P.DETAILS_STREAM_EOF
        assert await proc.wait(30) == 0
        assert "server stopped" in proc.output


async def test_sigint_exits_130_as_the_command_line_page_says(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path / "r.db") as proc:
        proc.send_signal(signal.SIGINT)
        assert await proc.wait(30) == 130
        assert "server stopped" in proc.output


async def test_a_second_sigint_ends_the_grace_at_once(tmp_path: Path) -> None:
    """With a day of grace and a call that never ends by itself, the second Ctrl-C stops
    the server (the call is cancelled) instead of being ignored."""
    proc = ServerProcess(tmp_path / "r.db", secret=SECRET, args=["--grace", "86400"])
    async with proc, connect(proc.address) as stub:
        call = stub.Stream(timeout=120)
        await call.write(pb.Request(content=pb.Content(id="open")))
        assert (await call.read()).request_id == "open"
        proc.send_signal(signal.SIGINT)
        await proc.wait_for_output("SIGINT received, stopping")
        assert proc.running  # the open call holds it in its grace
        proc.send_signal(signal.SIGINT)
        assert await proc.wait(60) == 130
        assert "SIGINT received again, stopping now" in proc.output
        assert "server stopped" in proc.output
        call.cancel()


@pytest.mark.parametrize("content", [b"this is not a sqlite database" * 100, b"\x00" * 4096])
async def test_corrupt_database_is_a_one_line_error(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(content)
    result = await run_serve("--address", "127.0.0.1:0", "--db", str(db))
    assert_one_line_error(result, "bad.db")
    assert db.read_bytes() == content  # left alone


async def test_unopenable_database_is_a_one_line_error(tmp_path: Path) -> None:
    result = await run_serve("--address", "127.0.0.1:0", "--db", str(tmp_path))
    assert_one_line_error(result, "cannot open database")


async def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    async with RainbowServer("127.0.0.1:0") as server:
        result = await run_serve("--address", server.address, "--db", str(tmp_path / "r.db"))
    assert_one_line_error(result, server.address, "in use")
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(
    "address", ["nonsense", "127.0.0.1:99999", "[::1", "no.such.host.invalid:1"]
)
async def test_bad_address_is_a_one_line_error(tmp_path: Path, address: str) -> None:
    result = await run_serve("--address", address, "--db", str(tmp_path / "r.db"))
    assert_one_line_error(result)


async def test_default_secret_on_a_public_address_is_refused(tmp_path: Path) -> None:
    result = await run_serve("--address", "0.0.0.0:0", "--db", str(tmp_path / "r.db"))
    assert_one_line_error(result, "default registration secret", "--allow-default-secret")
    assert P.DEFAULT_REGISTRATION_SECRET not in result.stderr


async def test_second_server_on_the_same_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with ServerProcess(db):
        result = await run_serve("--address", "127.0.0.1:0", "--db", str(db))
    assert_one_line_error(result, "another server")


async def test_server_process_reports_a_failed_start(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"garbage" * 1000)
    proc = ServerProcess(db)
    with pytest.raises(ServerProcessError) as info:
        await proc.start()
    assert "rainbow-aio serve: error:" in info.value.output
    assert not proc.running


async def test_secret_is_never_logged(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path / "r.db", secret="very-secret-value") as proc:
        async with connect(proc.address) as stub:
            cluster = await stub.Register(
                pb.RegisterRequest(name="alpha", secret="very-secret-value")
            )
            await submit(stub, Cluster("alpha", cluster.token, cluster.secret))
        await proc.terminate()
    for value in ("very-secret-value", cluster.token, cluster.secret):
        assert value not in proc.output


def test_server_process_blocking_api(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "r.db") as proc:
        assert proc.running
        assert proc.pid is not None
        assert proc.address == f"127.0.0.1:{proc.port}"
        assert proc.wait_for_output_sync("server listening").endswith(proc.address)
        with pytest.raises(ServerProcessError):
            proc.start_sync()  # already running
    assert not proc.running
    assert proc.returncode == 0


async def test_limit_options_reach_the_server(tmp_path: Path) -> None:
    args = ["--max-calls-in-flight", "3", "--max-queued-writes", "4", "--max-response-bytes", "150"]
    async with ServerProcess(tmp_path / "r.db", secret=SECRET, args=args) as proc:
        assert "limits: 3 calls in flight holding" in proc.output
        assert "4 queued writes, 150-byte answers" in proc.output
        async with connect(proc.address) as stub:
            alpha = await register(stub, "alpha")
            await submit(stub, alpha, "short")
            assert len(await listed(stub, alpha)) == 1
            await submit(stub, alpha, "x" * 200)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await listed(stub, alpha)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 150 bytes" in (info.value.details() or "")


@pytest.mark.parametrize(
    "option", ["--max-calls-in-flight", "--max-queued-writes", "--max-response-bytes"]
)
@pytest.mark.parametrize("value", ["0", "1.5"])
async def test_bad_limit_options_are_a_usage_error(tmp_path: Path, option: str, value: str) -> None:
    result = await run_serve("--db", str(tmp_path / "r.db"), option, value)
    assert result.returncode == 2
    assert option in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "r.db").exists()


async def test_a_limit_beyond_grpc_messages_is_a_usage_error(tmp_path: Path) -> None:
    result = await run_serve(
        "--address",
        "127.0.0.1:0",
        "--db",
        str(tmp_path / "r.db"),
        "--max-response-bytes",
        "3000000000",
    )
    assert_one_line_error(result, "--max-response-bytes", "2147483647")
    assert result.returncode == 2


PARENT = """
import sys
from rainbow_aio.testing import ServerProcess
server = ServerProcess(sys.argv[1])
server.start_sync()
print(server.pid, flush=True)
sys.stdin.read()  # until killed
"""


def _gone(pid: int) -> bool:
    """The process has exited (a zombie that nobody has reaped yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_no_server_outlives_the_process_that_started_it(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A test run ended by a CI timeout's SIGTERM, or by SIGKILL: its ServerProcess
    children stop by themselves."""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path / "r.db"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert parent.stdout is not None
    server_pid = 0
    try:
        async with asyncio.timeout(60):
            server_pid = int(await parent.stdout.readline())
        assert not _gone(server_pid)
        parent.send_signal(sig)
        await parent.wait()
        async with asyncio.timeout(60):
            while not _gone(server_pid):  # noqa: ASYNC110 - another process, no event
                await asyncio.sleep(0.05)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if server_pid and not _gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)  # the server this test started, by pid
