"""The command line keeps its word: exit codes and messages, ``--version``, credentials
kept out of the process list, the original scripts' habits, and Ctrl-C.

Every command runs as a child process (``python -m rainbow_aio ...``) against a real
server on loopback.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

import rainbow_aio
from rainbow_aio import Job, RainbowClient
from rainbow_aio.server import RainbowServer

from ._run import ROOT, SilentServer, cli, interrupt
from .conftest import SECRET

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TOKEN_LIKE = "00000000-1111-2222-3333-444444444444"

# (subcommand, arguments after it, the option the message must name)
BAD_COMMAND_LINES = [
    ("submit", ("--token", "t", "--nodes", "-1", "echo"), "--nodes"),
    ("submit", ("--token", "t", "--nodes", "many", "echo"), "--nodes"),
    ("submit", ("--token", "t", "--nodes", "2147483648", "echo"), "--nodes"),
    ("submit", ("--token", "t", "--tasks", "-3", "echo"), "--tasks"),
    ("submit", ("--token", "t", "--cluster", " ", "echo"), "--cluster"),
    ("submit", ("--token", "", "echo"), "--token"),
    ("submit", ("--token", "@/nonexistent/token", "echo"), "--token"),
    ("submit", ("echo",), "--token"),
    ("submit", ("--token", "t"), "command"),
    ("submit", ("--token", "t", "--"), "command"),
    ("submit", ("--token", "t", "echo", "--nodes", "-2"), "--nodes"),
    ("submit", ("--token", "t", "echo", "--nodes"), "--nodes"),
    ("submit", ("--token", "t", "flux", "run", "--nodes", "2", "x"), "--nodes"),
    ("poll", ("--secret", "s", "--timeout", "inf"), "--timeout"),
    ("poll", ("--secret", "s", "--timeout", "nan"), "--timeout"),
    ("poll", ("--secret", "s", "--timeout", "0"), "--timeout"),
    ("poll", ("--secret", "s", "--timeout", "1e300"), "--timeout"),
    ("poll", ("--secret", "s", "--accept", "-1"), "--accept"),
    ("poll", ("--secret", "s", "--max-jobs", "-2"), "--max-jobs"),
    ("poll", (), "--secret"),
    ("register", ("--cluster", ""), "--cluster"),
    ("register", ("one", "--cluster", "two"), "--cluster"),
]


async def test_a_bad_command_line_exits_2_before_printing_or_sending_anything(
    server: RainbowServer,
) -> None:
    """Each mistake is one stderr line that names the option and points at the
    subcommand's help; the server never hears from the command."""
    for sub, args, option in BAD_COMMAND_LINES:
        result = await cli(sub, "--host", server.address, *args)
        assert result.code == 2, (sub, args, result.err)
        assert result.out == "", (sub, args)
        [line] = result.err.splitlines()
        assert line.startswith(f"rainbow-aio {sub}: error: "), line
        assert line.endswith(f"(see: rainbow-aio {sub} --help)"), line
        assert option in line, (option, line)
        assert "Traceback" not in result.err
        assert "Error" not in line, line  # no internal class names
    assert sum(server.call_counts.values()) == 0


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (("register", "--host", "no-port-here"), "--host"),
        (("poll", "--secret", "s", "--host", "http://localhost:50051"), "--host"),
        (("serve", "--grace", "-1"), "--grace"),
        (("serve", "--grace", "nan"), "--grace"),
        (("demo", "--timeout", "inf"), "--timeout"),
        (("demo", "--jobs", "0"), "--jobs"),
    ],
)
async def test_values_checked_after_parsing_are_bad_command_lines_too(
    argv: tuple[str, ...], option: str
) -> None:
    result = await cli(*argv)
    assert result.code == 2, result.err
    assert result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith(f"rainbow-aio {argv[0]}: error: argument {option}: "), line
    assert line.endswith(f"(see: rainbow-aio {argv[0]} --help)")


async def test_a_malformed_host_says_what_is_wrong_with_it() -> None:
    result = await cli("register", "--host", "no-port-here")
    assert result.err.splitlines() == [
        "rainbow-aio register: error: argument --host: invalid host 'no-port-here': the port "
        "is missing (for example no-port-here:50051) (see: rainbow-aio register --help)"
    ]


async def test_an_unknown_command_points_at_the_top_level_help() -> None:
    result = await cli("launch")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith("rainbow-aio: error: argument COMMAND: invalid choice: 'launch'")
    assert line.endswith("(see: rainbow-aio --help)")


async def test_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    result = await cli("--version")
    assert result.code == 0
    assert result.out == f"rainbow-aio {rainbow_aio.__version__}\n"
    assert rainbow_aio.__version__ == pyproject["project"]["version"]


# -- credentials ------------------------------------------------------------------------


async def register(server: RainbowServer, cluster: str = "keebler") -> tuple[str, str]:
    result = await cli("register", cluster, "--host", server.address, "--secret", SECRET)
    assert result.code == 0, result.err
    token = re.fullmatch(rf'token: "({UUID})"', result.lines[0])
    secret = re.fullmatch(rf'secret: "({UUID})"', result.lines[1])
    assert token
    assert secret
    return token[1], secret[1]


async def waiting_jobs(server: RainbowServer, secret: str, cluster: str = "keebler") -> list[Job]:
    async with RainbowClient(server.address) as client:
        return list(await client.request_jobs(cluster, secret))


async def test_token_and_secret_from_the_environment(server: RainbowServer) -> None:
    token, secret = await register(server)
    submitted = await cli(
        "submit", "--host", server.address, "echo", "hi", env={"RAINBOW_TOKEN": token}
    )
    assert submitted.code == 0, submitted.err
    assert submitted.lines[-1] == "status: SUBMIT_SUCCESS"
    polled = await cli("poll", "--host", server.address, env={"RAINBOW_SECRET": secret})
    assert polled.code == 0, polled.err
    assert polled.lines[1] == "Received 1 jobs for inspection!"
    assert json.loads(polled.lines[2])["command"] == "echo hi"


async def test_token_and_secret_from_a_file(server: RainbowServer, tmp_path: Path) -> None:
    token, secret = await register(server)
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "secret").write_text(secret)  # no final line break: also fine
    submitted = await cli(
        "submit", "--host", server.address, "--token", f"@{tmp_path / 'token'}", "true"
    )
    assert submitted.code == 0, submitted.err
    polled = await cli(
        "poll", "--host", server.address, "--secret", f"@{tmp_path / 'secret'}", "--accept", "1"
    )
    assert polled.code == 0, polled.err
    assert polled.lines[-2:] == ["Accepting 1 jobs...", "[1]"]


async def test_the_option_wins_over_the_environment(server: RainbowServer) -> None:
    token, _ = await register(server)
    right_option = await cli(
        "submit",
        "--host",
        server.address,
        "--token",
        token,
        "true",
        env={"RAINBOW_TOKEN": TOKEN_LIKE},
    )
    assert right_option.code == 0, right_option.err
    wrong_option = await cli(
        "submit",
        "--host",
        server.address,
        "--token",
        TOKEN_LIKE,
        "true",
        env={"RAINBOW_TOKEN": token},
    )
    assert wrong_option.code == 1
    assert "denied" in wrong_option.err
    assert TOKEN_LIKE not in wrong_option.err
    assert token not in wrong_option.err


async def test_register_reads_the_registration_secret_not_a_clusters(
    server: RainbowServer,
) -> None:
    """RAINBOW_SECRET holds a cluster's secret (for poll); the server's registration secret
    has a variable of its own, so exporting one never sends it where the other belongs."""
    base = ("register", "--host", server.address)
    wrong_variable = await cli(*base, "keebler", env={"RAINBOW_SECRET": SECRET})
    assert wrong_variable.code == 1  # the default secret was sent, and denied
    assert "denied" in wrong_variable.err
    assert SECRET not in wrong_variable.err
    right_variable = await cli(*base, "keebler", env={"RAINBOW_REGISTRATION_SECRET": SECRET})
    assert right_variable.code == 0, right_variable.err
    assert right_variable.lines[2] == "status: REGISTER_SUCCESS"


async def test_a_missing_credential_names_every_way_to_give_it() -> None:
    result = await cli("poll")
    assert result.code == 2
    assert result.err.splitlines() == [
        "rainbow-aio poll: error: --secret is required: give --secret SECRET, "
        "--secret @FILE, or set RAINBOW_SECRET (see: rainbow-aio poll --help)"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (TOKEN_LIKE.encode() + b"\nsecond line\n", "has more than one line"),
        (b"\xff" + TOKEN_LIKE.encode(), "is not UTF-8 text"),
    ],
)
async def test_a_bad_credential_file_is_named_and_its_content_never_shown(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    result = await cli("submit", "--token", f"@{path}", "true")
    assert result.code == 2
    assert result.err.splitlines() == [
        f"rainbow-aio submit: error: argument --token: {str(path)!r} {problem} "
        "(see: rainbow-aio submit --help)"
    ]
    assert TOKEN_LIKE not in result.err
    assert "second line" not in result.err


@pytest.mark.parametrize("sub", ["serve", "demo"])
async def test_commands_of_our_own_refuse_unknown_options(sub: str) -> None:
    """Only the commands that replace the original scripts keep the scripts' leniency."""
    result = await cli(sub, "--frobnicate", "1")
    assert result.code == 2
    assert result.err.splitlines() == [
        f"rainbow-aio {sub}: error: unknown option --frobnicate and 1 word left over "
        f"(see: rainbow-aio {sub} --help)"
    ]


async def test_help_names_the_environment_variables() -> None:
    for sub, variable in (
        ("submit", "$RAINBOW_TOKEN"),
        ("poll", "$RAINBOW_SECRET"),
        ("register", "$RAINBOW_REGISTRATION_SECRET"),
    ):
        result = await cli(sub, "--help")
        assert result.code == 0
        text = " ".join(result.out.split())  # argparse wraps lines
        assert variable in text, sub
        assert "@FILE" in text, sub


# -- the original scripts' habits ---------------------------------------------------------


async def test_register_takes_the_cluster_name_as_a_word(server: RainbowServer) -> None:
    await register(server, "blueberry")
    again = await cli(
        "register", "--host", server.address, "--cluster", "blueberry", "--secret", SECRET
    )
    assert again.code == 1
    assert again.lines[-1] == "The cluster blueberry already exists."


async def test_poll_ignores_words_left_over_like_the_original(server: RainbowServer) -> None:
    """The original README polls with ``... --cluster keebler echo hello world``."""
    token, secret = await register(server)
    await cli("submit", "--host", server.address, "--token", token, "echo", "hello")
    result = await cli(
        "poll",
        "--host",
        server.address,
        "--secret",
        secret,
        "--cluster",
        "keebler",
        "echo",
        "hello",
        "world",
    )
    assert result.code == 0, result.err
    assert result.lines[:2] == ["Status: REQUEST_JOBS_SUCCESS", "Received 1 jobs for inspection!"]
    assert result.err.splitlines() == [
        "rainbow-aio poll: note: ignoring 3 words, as the original script did"
    ]


async def test_submit_takes_the_commands_own_options(server: RainbowServer) -> None:
    token, secret = await register(server)
    base = ("submit", "--host", server.address, "--token", token)
    for args in (
        ("ls", "-la", "/tmp"),
        ("--", "-v", "--name", "x"),
        ("--nodes", "2", "--", "flux", "run", "--nodes", "2", "hostname"),
    ):
        result = await cli(*base, *args)
        assert result.code == 0, (args, result.err)
    jobs = await waiting_jobs(server, secret)
    assert [(job.command, job.nodes) for job in jobs] == [
        ("ls -la /tmp", 1),
        ("-v --name x", 1),
        ("flux run --nodes 2 hostname", 2),
    ]


async def test_submit_takes_its_own_options_after_the_command_too(
    server: RainbowServer,
) -> None:
    """As the original did: ``submit echo hi --token T``."""
    token, secret = await register(server)
    result = await cli(
        "submit", "echo", "hi", "--host", server.address, "--token", token, "--nodes=2"
    )
    assert result.code == 0, result.err
    [job] = await waiting_jobs(server, secret)
    assert (job.command, job.nodes) == ("echo hi", 2)


async def test_submit_refuses_to_guess_whose_option_is_between_the_words(
    server: RainbowServer,
) -> None:
    token, secret = await register(server)
    result = await cli(
        "submit", "--host", server.address, "--token", token, "flux", "run", "--nodes", "2", "x"
    )
    assert result.code == 2
    [line] = result.err.splitlines()
    assert "--nodes comes between words of the command" in line
    assert "put -- before the command" in line
    assert await waiting_jobs(server, secret) == []


async def test_unknown_options_and_words_are_ignored_like_the_original(
    server: RainbowServer,
) -> None:
    """The original scripts parsed with ``parse_known_args``: what they did not know they
    dropped. So do these, but they say so, naming an unknown option without its value (a
    mistyped ``--secret=...`` still carries a secret)."""
    registered = await cli(
        "register", "keebler", "spare", "--frob", "--host", server.address, "--secret", SECRET
    )
    assert registered.code == 0, registered.err
    assert registered.err.splitlines() == [
        "rainbow-aio register: note: ignoring unknown option --frob and 1 word, "
        "as the original script did"
    ]
    token = re.fullmatch(rf'token: "({UUID})"', registered.lines[0])
    secret = re.fullmatch(rf'secret: "({UUID})"', registered.lines[1])
    assert token
    assert secret
    submitted = await cli(
        "submit", "--verbose", "--host", server.address, "--token", token[1], "echo", "hi"
    )
    assert submitted.code == 0, submitted.err
    assert submitted.err.splitlines() == [
        "rainbow-aio submit: note: ignoring unknown option --verbose, as the original script did"
    ]
    polled = await cli(
        "poll",
        "--host",
        server.address,
        "--secret",
        secret[1],
        f"--secrte={TOKEN_LIKE}",
        "--tokn",
        TOKEN_LIKE,
    )
    assert polled.code == 0, polled.err
    assert polled.lines[1] == "Received 1 jobs for inspection!"
    assert polled.err.splitlines() == [
        "rainbow-aio poll: note: ignoring unknown options --secrte --tokn and 1 word, "
        "as the original script did"
    ]


# -- Ctrl-C ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("register", "keebler"),
        ("submit", "--token", "t", "echo", "hi"),
        ("poll", "--secret", "s"),
    ],
)
async def test_ctrl_c_is_one_line(argv: tuple[str, ...]) -> None:
    """Interrupted in the middle of a call the server never answers."""
    async with SilentServer() as silent:
        result = await interrupt(
            "-m",
            "rainbow_aio",
            *argv,
            "--host",
            silent.address,
            "--timeout",
            "60",
            when=lambda: silent.calls > 0,
        )
    assert result.code == 130, result
    assert result.err == "rainbow-aio: interrupted\n", result
