"""``rainbow-aio register | submit | poll`` end to end against a real server.

Each command runs as a child process (``python -m rainbow_aio ...``) against an
in-process server on loopback, and its output is checked line by line against the
format of the original rainbow Python scripts.
"""

from __future__ import annotations

import asyncio
import json
import re

from support.grpc_faults import FaultInjector

from rainbow_aio import RainbowClient
from rainbow_aio.server import RainbowServer

from ._run import Result, cli, unused_port
from .conftest import SECRET

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


async def register(server: RainbowServer, cluster: str) -> tuple[str, str]:
    result = await cli(
        "register", "--host", server.address, "--cluster", cluster, "--secret", SECRET
    )
    assert result.code == 0, result.err
    token = re.fullmatch(rf'token: "({UUID})"', result.lines[0])
    secret = re.fullmatch(rf'secret: "({UUID})"', result.lines[1])
    assert token, result.out
    assert secret, result.out
    return token[1], secret[1]


async def submit(server: RainbowServer, cluster: str, token: str, *words: str) -> Result:
    return await cli(
        "submit", "--host", server.address, "--cluster", cluster, "--token", token, *words
    )


async def test_register_prints_the_credentials_like_the_original(server: RainbowServer) -> None:
    result = await cli(
        "register", "--host", server.address, "--cluster", "keebler", "--secret", SECRET
    )
    assert result.code == 0
    assert result.err == ""
    lines = result.lines
    assert len(lines) == 6
    token = re.fullmatch(rf'token: "({UUID})"', lines[0])
    secret = re.fullmatch(rf'secret: "({UUID})"', lines[1])
    assert token
    assert secret
    assert lines[2:4] == ["status: REGISTER_SUCCESS", ""]
    assert lines[4] == (f"🤫️ The token you will need to submit jobs to this cluster is {token[1]}")
    assert lines[5] == f"🔐️ The secret you will need to accept jobs is {secret[1]}"


async def test_register_twice_says_the_cluster_exists(server: RainbowServer) -> None:
    await register(server, "keebler")
    result = await cli(
        "register", "--host", server.address, "--cluster", "keebler", "--secret", SECRET
    )
    assert result.code == 1  # no credentials were issued
    assert result.lines == [
        "status: REGISTER_EXISTS",
        "",
        "The cluster keebler already exists.",
    ]


async def test_register_with_the_wrong_secret_is_one_line_of_advice(
    server: RainbowServer,
) -> None:
    result = await cli("register", "--host", server.address, "--secret", "not-it")
    assert result.code == 1
    assert result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith("rainbow-aio: error: the server at ")
    assert "denied" in line
    assert "--secret" in line
    assert "not-it" not in line


async def test_submit_prints_the_command_status_and_job_id(server: RainbowServer) -> None:
    token, _ = await register(server, "keebler")
    result = await submit(server, "keebler", token, "echo", "hello", "world")
    assert result.code == 0, result.err
    assert result.lines == [
        "⭐️ Submitting job: echo hello world",
        "jobid: 1",
        "status: SUBMIT_SUCCESS",
    ]


async def test_submit_with_a_wrong_token_fails_in_one_line(server: RainbowServer) -> None:
    await register(server, "keebler")
    result = await submit(server, "keebler", "wrong-token", "true")
    assert result.code == 1
    [line] = result.err.splitlines()
    assert "denied" in line
    assert "--token" in line
    assert "'keebler'" in line
    assert "wrong-token" not in result.err
    assert "Traceback" not in result.err


async def test_poll_lists_jobs_as_the_server_sends_them_then_accepts(
    server: RainbowServer,
) -> None:
    token, secret = await register(server, "keebler")
    commands = ["echo one", "sleep 1 && echo <two>", "naïve three"]
    for command in commands:
        assert (await submit(server, "keebler", token, command)).code == 0
    base = ("poll", "--host", server.address, "--cluster", "keebler", "--secret", secret)

    listed = await cli(*base)
    assert listed.code == 0, listed.err
    assert listed.lines[:2] == ["Status: REQUEST_JOBS_SUCCESS", "Received 3 jobs for inspection!"]
    assert listed.lines[2:] == [
        '{"id":1,"cluster":"keebler","name":"","nodes":1,"tasks":0,"command":"echo one"}',
        '{"id":2,"cluster":"keebler","name":"","nodes":1,"tasks":0,'
        '"command":"sleep 1 \\u0026\\u0026 echo \\u003ctwo\\u003e"}',
        '{"id":3,"cluster":"keebler","name":"","nodes":1,"tasks":0,"command":"naïve three"}',
    ]
    assert [json.loads(line)["command"] for line in listed.lines[2:]] == commands

    accepting = await cli(*base, "--accept", "2")
    assert accepting.code == 0, accepting.err
    assert accepting.lines[-2:] == ["Accepting 2 jobs...", "[1, 2]"]

    after = await cli(*base, "--max-jobs", "5")
    assert after.lines[1] == "Received 1 jobs for inspection!"
    assert json.loads(after.lines[2])["id"] == 3


async def test_poll_accept_takes_the_jobs_in_one_call_or_one_call_each(
    server: RainbowServer,
) -> None:
    token, secret = await register(server, "keebler")
    for n in range(6):
        await submit(server, "keebler", token, f"job {n}")
    base = ("poll", "--host", server.address, "--cluster", "keebler", "--secret", secret)
    calls = server.call_counts.get("AcceptJobs", 0)
    together = await cli(*base, "--accept", "3")
    assert together.code == 0, together.err
    assert together.lines[-1] == "[1, 2, 3]"
    assert server.call_counts["AcceptJobs"] - calls == 1
    each = await cli(*base, "--accept", "3", "--accept-mode", "shared")
    assert each.code == 0, each.err
    assert each.lines[-1] == "[4, 5, 6]"
    assert server.call_counts["AcceptJobs"] - calls == 1 + 3


async def test_poll_accept_never_prints_jobs_another_process_may_have_taken(
    server: RainbowServer,
) -> None:
    token, secret = await register(server, "keebler")
    for n in range(3):
        await submit(server, "keebler", token, f"job {n}")
    async with FaultInjector(server.address) as faults, RainbowClient(server.address) as other:
        faults.stall("AcceptJobs")
        base = ("poll", "--host", faults.address, "--cluster", "keebler", "--secret", secret)
        polling = asyncio.create_task(cli(*base, "--accept", "3"))
        await faults.wait_held("AcceptJobs")  # listed, its accept not at the server yet
        await other.accept_jobs("keebler", secret, [2])  # someone else takes one
        faults.release("AcceptJobs")
        result = await polling
    assert result.code == 1
    assert result.lines[-1] == "[]"  # which two it took cannot be known: none claimed
    assert "another process took some of jobs [1, 2, 3]" in result.err
    assert "--accept-mode shared" in result.err


async def test_poll_max_jobs_and_an_empty_queue(server: RainbowServer) -> None:
    token, secret = await register(server, "keebler")
    base = ("poll", "--host", server.address, "--cluster", "keebler", "--secret", secret)
    empty = await cli(*base, "--accept", "1")
    assert empty.code == 0
    assert empty.lines == ["Status: REQUEST_JOBS_NORESULTS", "Received 0 jobs for inspection!"]

    for n in range(4):
        await submit(server, "keebler", token, f"job {n}")
    some = await cli(*base, "--max-jobs", "2")
    assert some.lines[1] == "Received 2 jobs for inspection!"
    assert [json.loads(line)["id"] for line in some.lines[2:]] == [1, 2]


async def test_poll_with_a_wrong_secret_names_the_option_to_check(
    server: RainbowServer,
) -> None:
    await register(server, "keebler")
    result = await cli("poll", "--host", server.address, "--secret", "nope")
    assert result.code == 1
    [line] = result.err.splitlines()
    assert "denied" in line
    assert "--secret" in line


async def test_nothing_listening_says_start_a_server() -> None:
    host = f"127.0.0.1:{unused_port()}"
    commands = [("register",), ("submit", "--token", "t", "true"), ("poll", "--secret", "s")]
    results = await asyncio.gather(
        *(cli(*args, "--host", host, "--timeout", "1") for args in commands)
    )
    for result in results:
        assert result.code == 1
        assert "Traceback" not in result.err
        assert result.err.splitlines() == [
            f"rainbow-aio: error: nothing answers at {host} — is a rainbow server running "
            "there? start one with: rainbow-aio serve (see docs/getting-started.md)"
        ]


async def test_every_command_has_help() -> None:
    commands = ("serve", "register", "submit", "poll", "demo")
    top, *subs = await asyncio.gather(cli("--help"), *(cli(c, "--help") for c in commands))
    assert top.code == 0
    for command, sub in zip(commands, subs, strict=True):
        assert command in top.out
        assert sub.code == 0, command
        assert sub.out.startswith(f"usage: rainbow-aio {command}")
        assert "rainbow" in sub.out.lower()
    submit_help, poll_help = subs[2].out, subs[3].out
    for option in ("--cluster", "--host", "--token", "--nodes", "--tasks", "--name", "command"):
        assert option in submit_help
    for option in ("--max-jobs", "--secret", "--accept", "unset defaults to all", "--tls-ca"):
        assert option in poll_help
