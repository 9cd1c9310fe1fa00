"""The Node peers these tests drive: skipped only off CI when node or `npm ci` is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def needs_node(package: str = "jose") -> pytest.MarkDecorator:
    """In CI the peers are installed by ./dev test, so a missing one fails rather than skips."""
    return pytest.mark.skipif(
        not os.environ.get("CI")
        and (shutil.which("node") is None or not (HERE / "node_modules" / package).is_dir()),
        reason="needs node and `npm ci` in tests/interop (./dev test does both)",
    )
