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
    """Appends JSON lines to a file or standard output. Writes are small and unbuffered-ish:
    one ``write`` per record, flushed, so a crash loses at most the line being written."""

    def __init__(self, path: str | Path = "-") -> None:
        self._lock = threading.Lock()
        self._own = False
        self._fh: IO[str]
        if str(path) == "-":
            self._fh = sys.stdout
        else:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            self._fh = p.open("a", encoding="utf-8", buffering=1)
            self._own = True

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str, sort_keys=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._own:
            self._fh.close()
