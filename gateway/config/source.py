"""YAML with line marks: every value remembers where it came from, so errors can point at it.

PyYAML silently keeps the last of two equal keys; an operator who writes a rule key twice gets the
second and never knows. We compose the node tree ourselves and refuse duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


def format_path(path: Iterable[str | int]) -> str:
    """``("listeners", 0, "tls")`` -> ``listeners[0].tls``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


@dataclass
class Problem:
    """One error or warning found in a file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}"


class ConfigError(Exception):
    """One or more problems in configuration or policy files; never reaches HTTP."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Document:
    """A parsed YAML file: plain data plus the line of every path in it."""

    file: Path
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    @property
    def display(self) -> str:
        try:
            return str(self.file.relative_to(Path.cwd()))
        except ValueError:
            return str(self.file)

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 1)

    def problem(self, path: PathKey, message: str) -> Problem:
        return Problem(self.display, self.line_of(path), format_path(path), message)


class _Composer:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.errors: list[Problem] = []
        self._scalar_loader = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, path: PathKey) -> Any:
        self.doc.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(
                        self.doc.problem(path, "YAML merge keys (<<) are not supported")
                    )
                    continue
                key = self.convert(key_node, (*path, "<key>"))
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    first = self.doc.lines.get((*path, key))
                    self.errors.append(
                        Problem(
                            self.doc.display,
                            key_node.start_mark.line + 1,
                            format_path((*path, key)),
                            f"duplicate key (first defined on line {first})",
                        )
                    )
                    continue
                out[key] = self.convert(value_node, (*path, key))
                # point at the key, not its value (which may start on the next line)
                self.doc.lines[(*path, key)] = key_node.start_mark.line + 1
            self.doc.lines.pop((*path, "<key>"), None)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar_loader.construct_object(node, deep=True)


def load_yaml(file: Path, text: str | None = None) -> Document:
    """Parse one YAML document safely, keeping line marks and refusing duplicate keys."""
    doc = Document(file=file, data=None)
    try:
        if text is None:
            text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [Problem(str(file), None, "(file)", f"cannot read: {exc.strerror}")]
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        msg = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [Problem(doc.display, line, "(yaml)", f"invalid YAML: {msg}")]
        ) from None
    if node is None:
        doc.data = {}
        doc.lines[()] = 1
        return doc
    composer = _Composer(doc)
    doc.data = composer.convert(node, ())
    if composer.errors:
        raise ConfigError(composer.errors)
    return doc


def validation_problems(doc: Document, exc: Any, prefix: PathKey = ()) -> list[Problem]:
    """Turn a pydantic ValidationError into file:line problems."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        # pydantic names union members and tagged variants in loc; drop what is not a data key.
        path: list[str | int] = list(prefix)
        for part in loc:
            candidate = (*path, part)
            is_last_key = err["type"] in ("missing", "extra_forbidden") and part == loc[-1]
            if candidate in doc.lines or isinstance(part, int) or is_last_key:
                path.append(part)
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "required key missing"
        else:
            msg = err["msg"]
            if "input" in err and kind not in ("model_type", "dict_type"):
                shown = repr(err["input"])
                if len(shown) <= 60:
                    msg += f" (got {shown})"
        problems.append(doc.problem(tuple(path), msg))
    return problems
