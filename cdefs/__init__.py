"""C declarations shared by the C sources and Python (through cffi).

The headers in this directory are the single definition of every struct and
constant that crosses the Python/C boundary.  ``cdef_text`` gives cffi a
version it can parse; ``defines`` gives pure-Python code the integer
constants without needing a compiled module.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\s*$")


def header_path(name: str) -> Path:
    return HERE / name


def cdef_text(name: str) -> str:
    """The header with preprocessor lines removed, except integer #defines."""
    out = []
    for line in header_path(name).read_text().splitlines():
        if line.lstrip().startswith("#") and not _DEFINE.match(line):
            continue
        out.append(line)
    return "\n".join(out)


@functools.cache
def defines(name: str) -> dict[str, int]:
    """Integer #define constants of a header, by name."""
    values: dict[str, int] = {}
    for line in header_path(name).read_text().splitlines():
        m = _DEFINE.match(line)
        if m:
            values[m.group(1)] = int(m.group(2), 0)
    return values
