"""The hooks `make asan` (tests/asan/run.py) builds and imports a second set of C modules through.

IPSECGW_CFLAGS reaches every module's compile and link after the module's own flags (so its -O wins),
IPSECGW_BUILD_OUT sends a direct rebuild somewhere other than the package folder, and IPSECGW_EXT_DIR
makes a process import fastpath's submodules from that folder first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cdefs import builder


class RecordingBuilder:
    """Stands in for cffi's FFI: keeps what set_source was given, and 'compiles' into tmpdir."""

    def __init__(self) -> None:
        self.kwargs: dict = {}
        self.tmpdir: str | None = None

    def set_source(self, module: str, prelude: str, **kwargs) -> None:
        self.kwargs = kwargs

    def compile(self, tmpdir: str) -> str:
        self.tmpdir = tmpdir
        out = Path(tmpdir) / "_probe.cpython-311-x86_64-linux-gnu.so"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"not really a module")
        return str(out)


def test_extra_flags_come_last_in_compile_and_are_linked_too(monkeypatch) -> None:
    monkeypatch.setenv(builder.CFLAGS_ENV, "-fsanitize=address,undefined -O1 '-DNAME=a b'")
    ffi = RecordingBuilder()
    builder.set_source(ffi, "fastpath._probe", "", direct=False, sources=["esp/esp_core.c"],
                       lib={"extra_compile_args": ["-include", "rte_config.h"]}, cflags=["-O3", "-Wall"])
    assert ffi.kwargs["extra_compile_args"] == ["-O3", "-Wall", "-include", "rte_config.h",
                                                "-fsanitize=address,undefined", "-O1", "-DNAME=a b"]
    assert ffi.kwargs["extra_link_args"] == ["-fsanitize=address,undefined", "-O1", "-DNAME=a b"]


def test_without_the_variable_nothing_is_added(monkeypatch) -> None:
    monkeypatch.delenv(builder.CFLAGS_ENV, raising=False)
    ffi = RecordingBuilder()
    builder.set_source(ffi, "fastpath._probe", "", direct=False, sources=["shm/shm.c"], cflags=["-O3"])
    assert ffi.kwargs["extra_compile_args"] == ["-O3"]
    assert ffi.kwargs["extra_link_args"] == []


def test_build_out_keeps_the_module_out_of_the_package_folder(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(builder.BUILD_OUT_ENV, str(tmp_path / "asan"))
    cwd = os.getcwd()
    ffi = RecordingBuilder()
    try:
        builder.rebuild(ffi, "fastpath._probe")
    finally:
        os.chdir(cwd)   # rebuild works from the project root
    assert ffi.tmpdir == str(tmp_path / "asan" / "cffi")
    assert (tmp_path / "asan" / "fastpath" / "_probe.cpython-311-x86_64-linux-gnu.so").exists()
    assert not list((builder.ROOT / "fastpath").glob("_probe*"))


def test_ext_dir_is_searched_before_the_package_folder(tmp_path) -> None:
    # a Python file stands in for a sanitized _shm: whichever is found first is the one imported
    (tmp_path / "_shm.py").write_text("FROM_EXT_DIR = True\n")
    probe = "import fastpath._shm as m, fastpath.batch as b; print(m.__file__); print(b.__file__)"
    env = dict(os.environ, IPSECGW_EXT_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    shm_file, batch_file = out.stdout.split()
    assert Path(shm_file) == tmp_path / "_shm.py"
    assert Path(batch_file) == builder.ROOT / "fastpath" / "batch.py"   # the rest still comes from the sources

    env.pop("IPSECGW_EXT_DIR")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.split()[0]).parent == builder.ROOT / "fastpath"
