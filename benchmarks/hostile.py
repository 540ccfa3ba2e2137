"""Hostile clients against a ``rainbow-aio serve`` process: what they cost the server
(peak memory) and the other clusters (their worst wait), for RELIABILITY.md.

    python benchmarks/hostile.py [--only NAME ...] [--json FILE]

Each scenario starts its own server process (``rainbow_aio.testing.ServerProcess``, on
whichever rainbow_aio is importable: run it with ``PYTHONPATH=OTHER_TREE`` to measure
another commit), registers a victim cluster that submits small jobs one after another
throughout, and then lets an attacker do one thing:

- ``accept``: one AcceptJobs naming 4,000,000 ids (1 byte each on the wire), twice at once;
- ``accept-cap``: the same with 100,000 ids (the most this branch's server takes in
  one call), ten at once;
- ``listing``: 40 jobs whose command is 3.9 MB of ``&``, then one RequestJobs of all;
- ``submits``: 60 SubmitJob calls of 4 MB each, all at once;
- ``unread``: 24 RequestJobs of a 20 MB listing and 50 Serial calls carrying 4 MB,
  from a client process that is stopped (SIGSTOP) as soon as it has sent them, so it
  never reads an answer; measured over 5 s, then the client is killed.

Reported per scenario: the attacker's outcome and time, the server's peak memory above
what it held before the attack (VmHWM, reset through /proc/PID/clear_refs), and the
victim's slowest submit during the attack. Numbers, not checks: nothing here fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.testing import ServerProcess

SECRET = "hostile-benchmark-secret"
BIG = 64 << 20  # the client's own limits, so that only the server's count


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def _register(stub: Any, name: str) -> tuple[str, str]:
    resp = await stub.Register(pb.RegisterRequest(name=name, secret=SECRET), timeout=30)
    return resp.token, resp.secret


async def _victim(stub: Any, token: str, stop: asyncio.Event, waits: list[float]) -> None:
    n = 0
    while not stop.is_set():
        began = time.perf_counter()
        await stub.SubmitJob(
            pb.SubmitJobRequest(cluster="victim", token=token, command=f"echo {n}"), timeout=60
        )
        waits.append(time.perf_counter() - began)
        n += 1
        await asyncio.sleep(0.005)


async def _outcome(call: Awaitable[Any]) -> str:
    try:
        resp = await call
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name} {exc.details()!r}"[:160]
    if isinstance(resp, pb.RequestJobsResponse):
        return f"OK, {len(resp.jobs)} jobs, {resp.ByteSize():,} bytes"
    return f"OK {type(resp).__name__}"


async def attack_accept(stub: Any, creds: tuple[str, str]) -> list[str]:
    ids = [5] * 4_000_000
    req = pb.AcceptJobsRequest(cluster="attacker", secret=creds[1], jobids=ids)
    return list(await asyncio.gather(*(_outcome(stub.AcceptJobs(req, timeout=300)) for _ in "ab")))


async def attack_accept_cap(stub: Any, creds: tuple[str, str]) -> list[str]:
    req = pb.AcceptJobsRequest(cluster="attacker", secret=creds[1], jobids=[5] * 100_000)
    outcomes = await asyncio.gather(
        *(_outcome(stub.AcceptJobs(req, timeout=300)) for _ in range(10))
    )
    return [f"{outcomes.count(o)} x {o}" for o in sorted(set(outcomes))]


async def prepare_listing(stub: Any, creds: tuple[str, str]) -> None:
    command = "&" * 3_900_000
    for _ in range(40):
        await stub.SubmitJob(
            pb.SubmitJobRequest(cluster="attacker", token=creds[0], command=command), timeout=60
        )


async def attack_listing(stub: Any, creds: tuple[str, str]) -> list[str]:
    req = pb.RequestJobsRequest(cluster="attacker", secret=creds[1])
    return [await _outcome(stub.RequestJobs(req, timeout=300))]


async def attack_submits(stub: Any, creds: tuple[str, str]) -> list[str]:
    req = pb.SubmitJobRequest(cluster="attacker", token=creds[0], command="x" * 4_000_000)
    outcomes = await asyncio.gather(
        *(_outcome(stub.SubmitJob(req, timeout=300)) for _ in range(60))
    )
    return [f"{outcomes.count(o)} x {o}" for o in sorted(set(outcomes))]


async def _nothing(stub: Any, creds: tuple[str, str]) -> None:
    return None


async def prepare_unread(stub: Any, creds: tuple[str, str]) -> None:
    for n in range(20):
        await stub.SubmitJob(
            pb.SubmitJobRequest(cluster="attacker", token=creds[0], command=f"{n}" * 1_000_000),
            timeout=60,
        )


UNREAD_CLIENT = """
import asyncio, sys
import grpc
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

async def main():
    address, secret = sys.argv[1], sys.argv[2]
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        await stub.Serial(pb.Request())
        listing = pb.RequestJobsRequest(cluster="attacker", secret=secret)
        serial = pb.Request(content=pb.Content(id="x" * 4_000_000))
        calls = [stub.RequestJobs(listing) for _ in range(24)]
        calls += [stub.Serial(serial) for _ in range(50)]
        for call in calls:
            asyncio.ensure_future(call.wait_for_connection())
        await asyncio.sleep(0.3)  # the requests are on their way
        print("sent", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def attack_unread(stub: Any, creds: tuple[str, str], address: str = "") -> list[str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UNREAD_CLIENT, address, creds[1], stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        await child.stdout.readline()
        child.send_signal(signal.SIGSTOP)
        await asyncio.sleep(5)
    finally:
        child.kill()
        await child.wait()
    return ["24 listings of 20 MB and 50 Serial of 4 MB, never read"]


SCENARIOS: dict[str, tuple[Callable[..., Awaitable[Any]], Callable[..., Awaitable[list[str]]]]] = {
    "accept": (_nothing, attack_accept),
    "accept-cap": (_nothing, attack_accept_cap),
    "listing": (prepare_listing, attack_listing),
    "submits": (_nothing, attack_submits),
    "unread": (prepare_unread, attack_unread),
}


async def scenario(name: str, tmp: Path) -> dict[str, Any]:
    prepare, attack = SCENARIOS[name]
    env = dict(os.environ, RAINBOW_REGISTRATION_SECRET=SECRET)
    server = ServerProcess(tmp / f"{name}.db", secret=SECRET, cleanup=True, env=env)
    await server.start()
    try:
        options = [
            ("grpc.max_receive_message_length", BIG),
            ("grpc.max_send_message_length", BIG),
        ]
        async with (
            grpc.aio.insecure_channel(server.address, options=options) as ch1,
            grpc.aio.insecure_channel(server.address, options=options) as ch2,
        ):
            attacker_stub, victim_stub = (
                pb_grpc.RainbowSchedulerStub(ch1),
                pb_grpc.RainbowSchedulerStub(ch2),
            )
            creds = await _register(attacker_stub, "attacker")
            victim_token, _ = await _register(victim_stub, "victim")
            await prepare(attacker_stub, creds)
            pid = server.pid
            assert pid is not None
            stop, waits = asyncio.Event(), []  # type: ignore[var-annotated]
            victim = asyncio.ensure_future(_victim(victim_stub, victim_token, stop, waits))
            await asyncio.sleep(0.5)
            waits.clear()
            _reset_peak(pid)
            base = _kib(pid, "VmRSS")
            began = time.perf_counter()
            if attack is attack_unread:
                outcomes = await attack_unread(attacker_stub, creds, server.address)
            else:
                outcomes = await attack(attacker_stub, creds)
            took = time.perf_counter() - began
            peak = _kib(pid, "VmHWM")
            await asyncio.sleep(0.2)
            stop.set()
            await victim
    finally:
        await server.stop()
    return {
        "scenario": name,
        "attacker": outcomes,
        "attack_seconds": round(took, 2),
        "server_rss_before_mib": round(base / 1024),
        "server_peak_above_before_mib": round((peak - base) / 1024),
        "victim_submits": len(waits),
        "victim_worst_wait_s": round(max(waits, default=0.0), 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            result = await scenario(name, Path(tmp))
            print(json.dumps(result), flush=True)
            results.append(result)
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"load": load, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
