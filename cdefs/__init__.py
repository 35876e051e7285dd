"""C declarations shared by the C sources and Python (through cffi).

The headers under this directory are the single definition of every struct and
constant that crosses the Python/C boundary.  ``cdef_text`` gives cffi a
version it can parse; ``defines`` gives pure-Python code the integer
constants without needing a compiled module.

The C sources sit in one folder per part, each with the cffi builder of its module:
``shm/`` the shared region between control and fastpath, ``esp/`` the batch ESP core
and its crypto back ends, ``kio/`` kernel packet I/O, ``dpdk/`` the DPDK loop, worker
and sessions, ``ip/`` the IP header helpers kernel I/O and DPDK share.  C includes a
header of another part by its path from here (``#include "esp/esp.h"``); Python names
a header by its file name alone, which is unique across the parts.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\s*$")


PARTS = ("shm", "esp", "kio", "dpdk", "ip")


@functools.cache
def _headers() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for part in PARTS:
        for path in sorted((HERE / part).glob("*.h")):
            if path.name in found:   # a bare name must say which header it means
                raise RuntimeError(f"cdefs: {path.name} is in both {found[path.name].parent.name}/ and {part}/")
            found[path.name] = path
    return found


def header_path(name: str) -> Path:
    """Where a header (by file name, e.g. ``"esp.h"``) lives among the parts."""
    try:
        return _headers()[name]
    except KeyError:
        raise FileNotFoundError(f"cdefs: no header {name} in " + ", ".join(f"{p}/" for p in PARTS)) from None


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
