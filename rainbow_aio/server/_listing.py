"""RequestJobs answers, built piece by piece and serialized away from the event loop.

A listing of a million jobs is about 170 MB of protobuf. Building it as one message on
the event loop stalls every other call for seconds, so the store's thread builds each
answer in pieces of at most :data:`PIECE_ROWS` jobs and serializes each piece as it goes.
Concatenated protobuf encodings merge: the pieces of a ``map<int32, string>`` joined
together are one valid ``RequestJobsResponse`` holding every entry, so the finished
answer is the pieces' bytes joined, followed once by the status field. The event loop
only hands the finished bytes to gRPC.

Joining 170 MB of pieces takes a tenth of a second or more, all of it holding the GIL,
so the event loop would stall for that long at the end of every huge listing. On Linux
the pieces of a long answer go instead to an anonymous in-memory file (``memfd``) as
they are made, and the answer is read back whole in one ``read``: system calls that copy
without the GIL. That read runs in a worker thread (:attr:`Answer.large`), not in the
store's thread, which meanwhile goes on serving other calls. (gRPC then makes its own
copy of the answer on the event loop; that one cannot be avoided.)

An answer larger than the server's ``max_response_bytes`` is refused with
:class:`AnswerTooLarge`, never cut short: a poller reads "fewer jobs than I asked for" as
"that is every waiting job", so a silently shortened answer would make it drop jobs.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterable
from typing import Final

from .. import _protocol as P
from .._gojson import JobRow, encode_jobs
from .._proto import rainbow_pb2 as pb

__all__ = ["PIECE_CHARS", "PIECE_ROWS", "Answer", "AnswerTooLarge", "Listing"]

PIECE_ROWS: Final = 500
"""Jobs read and encoded in one piece at most (about 2 ms of work for ordinary jobs):
the longest a listing holds the store's thread before other calls get their turn."""

PIECE_CHARS: Final = 1 << 20
"""A piece also ends after the job that could take its JSON past this many characters,
so that large jobs cost one piece each (a 4 MB command of ``&`` is 23 MB of JSON, a few
tens of milliseconds), not 500 of them at once. The jobs are read before they are
encoded, so it is their names and commands that are counted, each character as the
most JSON it can make (:data:`_MOST_PER_CHAR`)."""

_MOST_PER_CHAR: Final = 6
"""The most characters of JSON one character of a name or command becomes (``&`` is
written ``\\u0026``)."""

_PIECE_TEXT: Final = PIECE_CHARS // _MOST_PER_CHAR
"""Characters of names and commands after which a piece ends (with the job that passes
it): about 170,000, more than 500 ordinary jobs hold."""

_ENTRY_MIN: Final = 4
"""The fewest bytes a map entry adds around its JSON (tags and lengths)."""

LARGE_ANSWER: Final = 1 << 20
"""Answers from this size on are assembled in a worker thread (:attr:`Answer.large`)."""

_SUCCESS: Final = pb.RequestJobsResponse(
    status=pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS
).SerializeToString()

# the smallest id SQLite can store: the first piece starts after it
_BEFORE_ANY_ID: Final = -(2**63)


class AnswerTooLarge(Exception):
    """The answer would be larger than the server allows; nothing was sent."""

    def __init__(self, limit: int, fitted: int) -> None:
        hint = f" (the first {fitted:,} would fit)" if fitted else ""
        super().__init__(
            f"{P.DETAILS_ANSWER_TOO_LARGE} of {limit:,} bytes; ask for fewer jobs with "
            f"maxJobs{hint}"
        )
        self.limit = limit
        self.fitted = fitted


class Answer:
    """The serialized pieces of one answer, and their assembly into one bytes object.

    The first piece stays in memory (a short answer is one piece, and costs no system
    call). From the second on, the pieces go to an anonymous in-memory file where the
    system has one, else they are kept in a list and joined.
    """

    __slots__ = ("_file", "_held", "size")

    def __init__(self) -> None:
        self._held: list[bytes] = []
        self._file: io.FileIO | None = None
        self.size = 0

    def add(self, piece: bytes) -> None:
        if self._file is None and len(self._held) == 1:
            self._file = _memory_file()
            if self._file is not None:
                _write_all(self._file, self._held.pop())
        if self._file is None:
            self._held.append(piece)
        else:
            _write_all(self._file, piece)
        self.size += len(piece)

    def end(self, tail: bytes) -> None:
        """Add the last few bytes (never a reason to move the pieces to a file)."""
        if self._file is None:
            self._held.append(tail)
        else:
            _write_all(self._file, tail)
        self.size += len(tail)

    @property
    def large(self) -> bool:
        """Worth assembling in a worker thread rather than where it was built."""
        return self.size >= LARGE_ANSWER

    def join(self) -> bytes:
        """Every piece in order, as one bytes object (empty for no piece); the pieces are
        released. Any thread may call it, once."""
        if self._file is None:
            data = b"".join(self._held)
            self._held.clear()
            return data
        try:
            self._file.seek(0)
            parts: list[bytes] = []
            got = 0
            while got < self.size:  # one read, unless the system returns less
                part = self._file.read(self.size - got)
                if not part:
                    raise OSError(f"listing file ended after {got} of {self.size} bytes")
                parts.append(part)
                got += len(part)
        finally:
            self.close()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        self._held.clear()
        if self._file is not None:
            self._file.close()
            self._file = None


def _memory_file() -> io.FileIO | None:
    """An anonymous file in memory, or None where the system has none to give."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        fd = os.memfd_create("rainbow-aio-listing", os.MFD_CLOEXEC)
    except OSError:  # out of file descriptors, say: join in memory instead
        return None
    return io.FileIO(fd, "w+")


def _write_all(file: io.FileIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        view = view[written or 0 :]


class Listing:
    """One RequestJobs answer in the making: the ``limit`` lowest-id jobs of a cluster
    (all of them when ``limit <= 0``), as serialized ``RequestJobsResponse`` bytes.

    The store's thread calls :meth:`want`, reads that many rows after :attr:`after_id`,
    and passes them to :meth:`add` until it returns True; then :meth:`answer` has the
    bytes. Each piece is its own read, so a long listing shows every job that waited
    throughout it, and may also show jobs submitted, or accepted, while it was built.
    """

    __slots__ = (
        "_count",
        "_limit",
        "_max_bytes",
        "_pieces",
        "after_id",
        "cluster",
        "fut",
        "pieces",
    )

    def __init__(
        self, cluster: str, limit: int, max_bytes: int, fut: asyncio.Future[bytes | Answer]
    ) -> None:
        self.cluster = cluster
        self.fut = fut
        self.after_id = _BEFORE_ANY_ID
        self._limit = max(limit, 0)
        self._max_bytes = max_bytes
        self._pieces = Answer()
        self._count = 0
        self.pieces = 0  # read so far: one means the answer shows one moment

    @property
    def limit(self) -> int:
        """``maxJobs`` as asked, 0 for all."""
        return self._limit

    @property
    def abandoned(self) -> bool:
        """The caller stopped waiting (its call was cancelled): stop building.

        Read from the store's thread; a stale value only costs one more piece.
        """
        return self.fut.done()

    def want(self) -> int:
        """How many rows the next piece should read."""
        if not self._limit:
            return PIECE_ROWS
        return min(PIECE_ROWS, self._limit - self._count)

    def add(self, rows: Iterable[JobRow], asked: int) -> bool:
        """Encode one piece read with ``LIMIT asked``; True when the answer is complete.

        ``rows`` is read one at a time (a cursor) until the names and commands read
        could make :data:`PIECE_CHARS` characters of JSON; the next piece starts after
        the last job taken. The piece is encoded in one go (most jobs need no escaping,
        and one check of the whole piece says so). Raises :class:`AnswerTooLarge` when
        the jobs encoded so far would pass the size limit, before any more are read.
        """
        self.pieces += 1
        taken: list[JobRow] = []
        text = 0  # characters of names and commands read
        full = False
        for row in rows:
            taken.append(row)
            text += len(row[1]) + len(row[4])
            if text >= _PIECE_TEXT:
                full = True
                break
        if taken:
            texts = encode_jobs(self.cluster, taken)
            # characters: never more than the bytes
            floor = self._pieces.size + len(_SUCCESS) + sum(map(len, texts))
            if floor + _ENTRY_MIN * len(texts) > self._max_bytes:
                raise AnswerTooLarge(self._max_bytes, self._count + self._fitting(texts))
            jobs = {row[0]: json for row, json in zip(taken, texts, strict=True)}
            piece = pb.RequestJobsResponse(jobs=jobs).SerializeToString()
            if self._pieces.size + len(piece) + len(_SUCCESS) > self._max_bytes:
                raise AnswerTooLarge(self._max_bytes, self._count)
            self._pieces.add(piece)
            self._count += len(jobs)
            self.after_id = taken[-1][0]
        if self._limit and self._count >= self._limit:
            return True
        return not full and len(taken) < asked

    def _fitting(self, texts: list[str]) -> int:
        """How many of ``texts`` (this piece's jobs) the answer could still hold."""
        floor = self._pieces.size + len(_SUCCESS)
        for n, json in enumerate(texts):
            floor += len(json) + _ENTRY_MIN
            if floor > self._max_bytes:
                return n
        return len(texts)

    def answer(self) -> Answer:
        """The finished answer, to be joined: empty (REQUEST_JOBS_NORESULTS) when no job
        waits. The listing no longer holds it."""
        if self._count:
            self._pieces.end(_SUCCESS)
        answer, self._pieces = self._pieces, Answer()
        return answer

    def close(self) -> None:
        """Release what the answer holds (also when it fails or is abandoned)."""
        self._pieces.close()
