"""Watch a whole test session for leaked credentials.

``WATCH`` collects two things while the session runs:

* every credential it learns about: tokens and secrets returned by
  ``RainbowClient.register`` (the conftest wraps it, passing results through untouched),
  registration secrets the tests choose, and any credential a test adds by hand
  (``WATCH.add``), e.g. one obtained through the raw stubs;
* every text a credential must never appear in: each log record of every logger at
  every level (a handler on the root logger, with the root level at DEBUG for the
  session), the message and repr of every ``RainbowError`` created, and whatever a test
  adds (``WATCH.add_text``): reprs, server process output, CLI stderr.

``leaks()`` lists every (source, masked credential) pair where a credential shows up in
a text. The conftest fails the session if any is found at the end, and
``test_security.py`` checks what was collected so far as an ordinary test.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

# Public on purpose (the Go server's and this library's default registration secret):
# seeing it in a log is not a leak.
PUBLIC_SECRETS = frozenset({"chocolate-cookies"})
_MIN_LEN = 8  # shorter strings would match by accident


def mask(secret: str) -> str:
    return f"{secret[:4]}…({len(secret)} chars)"


class _Handler(logging.Handler):
    def __init__(self, watch: SecretWatch) -> None:
        super().__init__(level=logging.DEBUG)
        self.watch = watch
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is not our business here
            text = f"{record.msg!r} % {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        self.watch.add_text(f"log:{record.name}:{record.levelname}", text)


class SecretWatch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.secrets: set[str] = set()
        self._texts: dict[str, str] = {}  # text -> first source
        self.handler = _Handler(self)
        self._old_level: int | None = None

    # -- collecting ----------------------------------------------------------------------

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            for secret in secrets:
                if secret and len(secret) >= _MIN_LEN and secret not in PUBLIC_SECRETS:
                    self.secrets.add(secret)

    def add_text(self, source: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._texts.setdefault(text, source)

    def add_texts(self, source: str, texts: Iterable[str]) -> None:
        for text in texts:
            self.add_text(source, text)

    @property
    def text_count(self) -> int:
        return len(self._texts)

    @property
    def record_count(self) -> int:
        return self.handler.records

    # -- logging -------------------------------------------------------------------------

    def install(self) -> None:
        root = logging.getLogger()
        if self.handler in root.handlers:
            return
        self._old_level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self.handler)

    def uninstall(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        if self._old_level is not None:
            root.setLevel(self._old_level)
            self._old_level = None

    # -- checking ------------------------------------------------------------------------

    def leaks(self) -> list[tuple[str, str]]:
        with self._lock:
            secrets = sorted(self.secrets)
            texts = list(self._texts.items())
        found = []
        # one big text per source keeps this fast even with thousands of records
        by_source: dict[str, list[str]] = {}
        for text, source in texts:
            by_source.setdefault(source, []).append(text)
        for source, chunks in by_source.items():
            blob = "\n".join(chunks)
            for secret in secrets:
                if secret in blob:
                    found.append((source, mask(secret)))
        return found


WATCH = SecretWatch()
