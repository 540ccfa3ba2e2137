"""The journal: one agent per file, a damaged file is an error naming it, states kept."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from rainbow_aio import Job, RainbowError
from rainbow_aio.agent import (
    JobStateName,
    Journal,
    JournalCorruptError,
    JournalLockedError,
)


def job(i: int, nodes: int = 1) -> Job:
    return Job(id=i, cluster="c", name=f"j{i}", nodes=nodes, tasks=1, command=f"echo {i}")


def test_second_agent_on_one_journal_is_refused_naming_file_and_pid(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal.open(path):
        with pytest.raises(JournalLockedError) as caught:
            Journal.open(path)
        assert str(path) in str(caught.value)
        assert f"pid {os.getpid()}" in str(caught.value)
        assert isinstance(caught.value, RainbowError)
        with Journal.read(path) as reader:  # status can read while the agent holds it
            assert reader.records() == []
    with Journal.open(path):  # released on close
        pass


@pytest.mark.parametrize(
    "content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\x01" * 5000]
)
def test_a_damaged_file_is_an_error_that_names_it_and_leaves_it(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(content)
    with pytest.raises(JournalCorruptError) as caught:
        Journal.open(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content  # never reset
    with pytest.raises(JournalCorruptError):
        Journal.read(path)


def test_another_sqlite_database_is_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(JournalCorruptError, match="not an agent journal"):
        Journal.open(path)


def test_states_times_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal.open(path) as j:
        assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        j.intend([job(1), job(2), job(3, nodes=2)], "c")
        j.accepted("c", [1], launching=True)
        j.running("c", 1, "local", "123:456")
        j.ended("c", 1, JobStateName.FINISHED, 0, "exit 0")
        j.settle("c", [2], JobStateName.NOT_TAKEN, "taken by another accepter")
        assert j.refuse(job(9, nodes=99), "c", "too big")
        assert not j.refuse(job(9, nodes=99), "c", "too big")  # reported once
    with Journal.read(path) as j:
        records = {r.id: r for r in j.records()}
    assert records[1].state is JobStateName.FINISHED
    assert records[1].exit_code == 0
    assert records[1].handle == "123:456"
    assert records[1].started is not None
    assert records[1].ended is not None
    assert records[1].job == job(1)
    assert records[2].state is JobStateName.NOT_TAKEN
    assert records[3].state is JobStateName.ACCEPTING
    assert records[9].state is JobStateName.REFUSED
    assert records[1].as_dict()["command"] == "echo 1"


def test_reading_a_journal_while_it_is_created_never_calls_it_damaged(tmp_path: Path) -> None:
    """``agent status`` while an agent creates its journal: "no journal yet" or the
    journal, never "not an agent journal" (the schema and its version are one commit,
    and the reader reads both in one transaction)."""
    import threading

    for n in range(60):
        path = tmp_path / f"j{n}.db"
        sqlite3.connect(path).close()  # the empty file exists before the agent's create
        creating = threading.Thread(target=lambda p=path: Journal.open(p).close())
        creating.start()
        try:
            while True:
                try:
                    Journal.read(path).close()
                except JournalCorruptError:
                    raise
                except RainbowError:
                    continue  # not created yet
                break
        finally:
            creating.join()
