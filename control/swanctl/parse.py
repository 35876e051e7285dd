"""strongSwan's settings syntax as swanctl.conf uses it, into a tree of ``Section``s.

What is read: ``name { ... }`` sections nested to any depth; ``key = value`` settings, the value being
the rest of the line up to a comment or a ``}``, or a double-quoted string that may span lines (escapes:
backslash before a quote, a backslash, n or t); ``#`` comments; ``include PATTERN`` at any level (a
glob, relative to the including file's directory, its files read in sorted order into the section the
statement is in); and a section that inherits another's settings (``child : base { ... }``, the base
named by its dotted path from the top, or as a sibling).  A section or setting given twice is merged,
the later value winning, as charon does.  Every problem is a ``SwanctlSyntaxError`` saying
``file:line: what was expected``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Section", "Setting", "SwanctlSyntaxError", "load_swanctl", "parse_swanctl"]

MAX_INCLUDE_DEPTH = 16      # charon's parser gives up on deeper nesting too; a cycle reaches it quickly
MAX_FILE_BYTES = 4 << 20    # far above any real swanctl.conf; stops /dev/zero and friends
MAX_NESTING = 64            # section levels; swanctl.conf has five (connections.c.children.ch, secrets.x)
_NAME_STOP = set(" \t\r\n{}=#:,\"")


class SwanctlSyntaxError(Exception):
    """An unreadable or unparsable swanctl.conf: the message is ``file:line: what was expected``."""


@dataclass
class Setting:
    value: str
    file: str
    line: int


@dataclass
class Section:
    name: str
    file: str = ""
    line: int = 0
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
    base: str | None = None         # ``name : base``, resolved by ``_inherit`` once everything is read

    def get(self, key: str) -> str | None:
        s = self.settings.get(key)
        return s.value if s is not None else None

    def merge(self, other: Section) -> None:
        self.settings.update(other.settings)
        for name, sub in other.sections.items():
            if name in self.sections:
                self.sections[name].merge(sub)
            else:
                self.sections[name] = sub


class _Reader:
    """One file's text with a position; the grammar is small enough for a hand-written scanner."""

    def __init__(self, text: str, file: str):
        self.text, self.file, self.pos, self.line = text, file, 0, 1

    def fail(self, expected: str, line: int | None = None) -> SwanctlSyntaxError:
        return SwanctlSyntaxError(f"{self.file}:{line or self.line}: {expected}")

    def skip_blank(self) -> None:
        """Spaces, newlines and comments."""
        t = self.text
        while self.pos < len(t):
            c = t[self.pos]
            if c == "\n":
                self.line += 1
                self.pos += 1
            elif c in " \t\r":
                self.pos += 1
            elif c == "#":
                while self.pos < len(t) and t[self.pos] != "\n":
                    self.pos += 1
            else:
                return

    def skip_inline(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _NAME_STOP:
            self.pos += 1
        return self.text[start:self.pos]

    def value(self) -> str:
        """After ``=``: a quoted string, or the rest of the line up to a comment or a ``}``, trimmed (so
        ``net { mode = tunnel }`` fits on one line; a value holding ``}`` or ``#`` is quoted)."""
        self.skip_inline()
        if self.peek() == '"':
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in "\n#}":
            self.pos += 1
        return self.text[start:self.pos].strip()

    def quoted(self) -> str:
        start_line = self.line
        self.pos += 1
        out = []
        escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
        t = self.text
        while self.pos < len(t):
            c = t[self.pos]
            if c == '"':
                self.pos += 1
                self.skip_inline()
                if self.peek() not in ("", "\n", "#", "}"):
                    raise self.fail("the end of the line after a quoted value")
                return "".join(out)
            if c == "\\" and self.pos + 1 < len(t):
                nxt = t[self.pos + 1]
                out.append(escapes.get(nxt, "\\" + nxt))
                self.pos += 2
                continue
            if c == "\n":
                self.line += 1
            out.append(c)
            self.pos += 1
        raise self.fail('a closing " for the quoted value begun here', start_line)


class _Parser:
    def __init__(self) -> None:
        self.files_read = 0

    def file(self, path: Path, into: Section, depth: int, level: int = 0) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise SwanctlSyntaxError(f"{path}: includes nested more than {MAX_INCLUDE_DEPTH} deep (an include "
                                     "cycle?)")
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise SwanctlSyntaxError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if len(data) > MAX_FILE_BYTES:
            raise SwanctlSyntaxError(f"{path}: more than {MAX_FILE_BYTES >> 20} MiB: not a swanctl.conf")
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise SwanctlSyntaxError(f"{path}:{line}: UTF-8 text (this is not a text file)") from None
        self.files_read += 1
        self.body(_Reader(text, str(path)), into, depth, top=True, level=level)

    def body(self, r: _Reader, into: Section, depth: int, top: bool, level: int) -> None:
        """Statements up to the end of the file (top) or the ``}`` closing ``into``."""
        while True:
            r.skip_blank()
            c = r.peek()
            if c == "":
                if not top:
                    raise r.fail(f"a closing }} for section {into.name!r} opened at line {into.line}")
                return
            if c == "}":
                if top:
                    raise r.fail("a setting or a section, got a } that closes nothing")
                r.pos += 1
                return
            line = r.line
            name = r.name()
            if not name:
                raise r.fail(f"a setting name or a section name, got {c!r}")
            r.skip_inline()
            nxt = r.peek()
            if name == "include" and nxt not in ("=", "{", ":"):
                self.include(r, r.value(), line, into, depth, level)
                continue
            if nxt == "=":
                r.pos += 1
                into.settings[name] = Setting(r.value(), r.file, line)
                continue
            base = None
            if nxt == ":":
                r.pos += 1
                r.skip_inline()
                base = r.name()
                if not base:
                    raise r.fail(f"the name of the section {name!r} inherits from, after ':'")
                r.skip_inline()
                nxt = r.peek()
            r.skip_blank()
            if r.peek() != "{":
                raise r.fail(f"'=' (a setting) or '{{' (a section) after {name!r}", line)
            r.pos += 1
            if level >= MAX_NESTING:
                raise r.fail(f"sections nested at most {MAX_NESTING} deep", line)
            sub = Section(name, r.file, line, base=base)
            self.body(r, sub, depth, top=False, level=level + 1)
            if name in into.sections:
                into.sections[name].merge(sub)
                into.sections[name].base = into.sections[name].base or base
            else:
                into.sections[name] = sub

    def include(self, r: _Reader, pattern: str, line: int, into: Section, depth: int, level: int) -> None:
        if not pattern:
            raise r.fail("a file or glob pattern after include", line)
        full = pattern if os.path.isabs(pattern) else os.path.join(os.path.dirname(r.file) or ".", pattern)
        if glob.has_magic(full):
            for path in sorted(glob.glob(full)):
                self.file(Path(path), into, depth + 1, level)
        elif not os.path.exists(full):
            raise r.fail(f"an include file that exists, got {pattern!r} ({full} not found)", line)
        else:
            self.file(Path(full), into, depth + 1, level)


def _lookup(root: Section, dotted: str) -> Section | None:
    s: Section | None = root
    for part in dotted.split("."):
        s = s.sections.get(part) if s is not None else None
    return s


def _inherit(root: Section, sec: Section, parent: Section, seen: tuple[str, ...] = ()) -> None:
    """Fill in what ``sec`` inherits: its own settings win over the base's."""
    for sub in sec.sections.values():
        _inherit(root, sub, sec, seen)
    if sec.base is None:
        return
    base = parent.sections.get(sec.base) or _lookup(root, sec.base)
    if base is None or base is sec:
        raise SwanctlSyntaxError(f"{sec.file}:{sec.line}: a section named {sec.base!r} for {sec.name!r} to "
                                 "inherit from (a sibling, or a dotted path from the top)")
    if sec.base in seen:
        raise SwanctlSyntaxError(f"{sec.file}:{sec.line}: sections that do not inherit from each other in a "
                                 f"circle ({' -> '.join((*seen, sec.base))})")
    _inherit(root, base, parent, (*seen, sec.base))
    merged = Section(sec.name, sec.file, sec.line)
    merged.merge(_copy(base))
    merged.merge(sec)
    sec.settings, sec.sections, sec.base = merged.settings, merged.sections, None


def _copy(s: Section) -> Section:
    return Section(s.name, s.file, s.line, dict(s.settings), {k: _copy(v) for k, v in s.sections.items()})


def load_swanctl(path: str | Path) -> Section:
    """The whole configuration in ``path`` with its includes, or a ``SwanctlSyntaxError``."""
    root = Section("", str(path), 1)
    _Parser().file(Path(path), root, 0)
    _inherit(root, root, root)
    return root


def parse_swanctl(text: str, file: str = "<swanctl.conf>") -> Section:
    """``text`` as one swanctl.conf; includes are looked up relative to ``file``'s directory."""
    root = Section("", file, 1)
    _Parser().body(_Reader(text, file), root, 0, top=True, level=0)
    _inherit(root, root, root)
    return root
