"""Compiler flags for system libraries, from pkg-config."""

from __future__ import annotations

import shutil
import subprocess


class NotFound(Exception):
    pass


def flags(package: str) -> dict[str, list[str]]:
    """cffi set_source keyword arguments for one pkg-config package."""
    if not shutil.which("pkg-config"):
        raise NotFound("pkg-config is not installed")
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", package], check=True, capture_output=True,
                                text=True).stdout.split()
        libs = subprocess.run(["pkg-config", "--libs", package], check=True, capture_output=True,
                              text=True).stdout.split()
    except subprocess.CalledProcessError as exc:
        raise NotFound(exc.stderr.strip() or f"pkg-config has no {package}") from exc
    return {
        "include_dirs": [f[2:] for f in cflags if f.startswith("-I")],
        "extra_compile_args": [f for f in cflags if not f.startswith("-I")],
        "library_dirs": [f[2:] for f in libs if f.startswith("-L")],
        "libraries": [f[2:] for f in libs if f.startswith("-l")],
    }
