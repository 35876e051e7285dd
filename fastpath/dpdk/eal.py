"""Starting DPDK's EAL: once per process, with arguments that work without hugepages or PCI.

EAL cannot be started twice nor restarted after ``rte_eal_cleanup`` in one
process, and it takes signals, memory and a runtime directory.  So short-lived
users (``ipsecgw caps``) run it in a child process; the fastpath process
starts it once and keeps it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

DEFAULT_MEMORY_MB = 1024


class DpdkUnavailable(RuntimeError):
    """The DPDK binding cannot be used here (not built, or libdpdk missing at run time)."""


class EalError(RuntimeError):
    """rte_eal_init failed or was asked to start twice with different arguments."""


_state: dict[str, Any] = {"args": None, "keep": None}


def load() -> tuple[Any, Any]:
    """The cffi ``(ffi, lib)`` of fastpath._dpdk, or DpdkUnavailable saying why not."""
    try:
        from fastpath import _dpdk  # type: ignore[attr-defined]
    except ImportError as exc:
        msg = str(exc)
        if "cannot import name '_dpdk'" in msg or exc.name == "fastpath._dpdk":
            why = "the DPDK binding fastpath._dpdk was not built (libdpdk-dev missing at install time?)"
        else:  # built, but e.g. librte_eal.so is gone
            why = f"the DPDK binding does not load: {msg}"
        raise DpdkUnavailable(why) from exc
    return _dpdk.ffi, _dpdk.lib


def availability() -> tuple[bool, str]:
    """(True, DPDK version) when the binding loads, else (False, the reason); EAL is not started."""
    try:
        ffi, lib = load()
    except DpdkUnavailable as exc:
        return False, str(exc)
    return True, ffi.string(lib.rte_version()).decode()


def eal_args(vdevs: Sequence[str] = (), *, memory_mb: int = DEFAULT_MEMORY_MB, file_prefix: str | None = None,
             lcores: str = "0", pci: Sequence[str] = (), log_level: str = "*:error",
             extra: Sequence[str] = ()) -> list[str]:
    """An EAL command line (argv[0] included) for this machine's set-up.

    No hugepages (``--no-huge -m``); PCI scanning only for the devices in
    ``pci`` (none: ``--no-pci``); a file prefix unique to this process so
    several DPDK processes can run at once.
    """
    args = ["ipsecgw", "--no-huge", "-m", str(memory_mb), "-l", lcores,
            "--file-prefix", file_prefix or f"ipsecgw-{os.getpid()}", "--log-level", log_level]
    if pci:
        for addr in pci:
            args += ["-a", addr]
    else:
        args.append("--no-pci")
    for v in vdevs:
        args += ["--vdev", v]
    args += list(extra)
    return args


def init(args: Sequence[str]) -> None:
    """Start EAL with ``args`` (argv[0] first).  A repeat call with the same arguments is a no-op."""
    args = list(args)
    if _state["args"] == "cleaned-up":
        raise EalError("EAL was cleaned up in this process and cannot start again")
    if _state["args"] is not None:
        if _state["args"] != args:
            raise EalError("EAL is already running in this process with other arguments")
        return
    ffi, lib = load()
    keep = [ffi.new("char[]", a.encode()) for a in args]
    argv = ffi.new("char *[]", keep)
    err = ffi.new("char[256]")
    if lib.ipsg_dpdk_eal_init(len(args), argv, err, len(err)) < 0:
        raise EalError(f"{ffi.string(err).decode(errors='replace')} (args: {' '.join(args[1:])})")
    # EAL keeps pointers into argv (e.g. the file prefix): keep the buffers alive.
    _state["args"], _state["keep"] = args, (keep, argv)


def initialized() -> bool:
    return isinstance(_state["args"], list)


def current_args() -> list[str]:
    """The arguments EAL runs with in this process (empty when it does not)."""
    return list(_state["args"]) if initialized() else []


def cleanup() -> None:
    """Release EAL resources before the process exits; EAL cannot be started again afterwards."""
    if not initialized():
        return
    _, lib = load()
    lib.rte_eal_cleanup()
    _state["args"] = "cleaned-up"
