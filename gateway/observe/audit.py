"""The audit trail: one JSON line per request, written by the pipeline in a ``finally``.

Only identifiers go in: credential hashes and ``jti`` values, never a token, key or secret. The
record is a plain dict built by the pipeline from typed values, so nothing from a header can
slip in unless a field was made for it.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import IO, Any


class AuditLog:
    """Appends JSON lines to a file or standard output.

    Standard output is flushed per line (people watch it). A file is written through a buffer
    that ``flush`` empties; the gateway calls it every ``FLUSH_INTERVAL`` seconds and at
    shutdown, so a crash can lose at most that much, and a busy gateway does one write syscall
    per batch instead of one per request.
    """

    FLUSH_INTERVAL = 0.25

    def __init__(self, path: str | Path = "-") -> None:
        self._lock = threading.Lock()
        self._own = False
        self._fh: IO[str]
        if str(path) == "-":
            self._fh = sys.stdout
            self._per_line = True
        else:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            self._fh = p.open("a", encoding="utf-8", buffering=256 * 1024)
            self._own = True
            self._per_line = False

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str, sort_keys=False)
        with self._lock:
            self._fh.write(line + "\n")
            if self._per_line:
                self._fh.flush()

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._fh.close()
