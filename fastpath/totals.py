"""Gateway-wide fastpath counters (``Totals``) and the file that carries them to ``ipsecgw status``.

The region's counters are per SA; what the operator reads first is gateway-wide: outbound packets by
classifier verdict (protected, bypass, discard, held for an ACQUIRE, too big...), inbound packets by ESP
status (ok, auth-failed, replay, no-sa...), bytes each way and send failures.  The fastpath counts them
per batch and writes them, about twice a second, to a small JSON file beside the region (temp file +
rename, so a reader never sees half of one); control reads it when asked for its status.

A fastpath restarted on the same region (kill -9, supervisor restart) starts from the last file
written, so the totals carry on like the per-SA counters do; a fresh region (its first attach) starts
from zero.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastpath import status_file
from fastpath.io import kio
from fastpath.status import N_STATUS, Status

WRITE_EVERY = 0.5            # seconds between status file writes

_SCALARS = ("tun_in", "tun_in_bytes", "tun_out", "tun_out_bytes", "esp_in", "esp_in_bytes", "sent",
            "esp_out_bytes", "send_failed", "held_dropped", "fragments", "ike_misdirected", "gro_dropped",
            "ah6_unrebuilt", "sa_refused")


@dataclass
class Totals:
    """Counted by fastpath/daemon.py per batch, never per packet.

    verdicts: outbound packets by kio verdict (fastpath.io.kio.VERDICT_NAMES); a packet held for an ACQUIRE
    counts as ``acquire`` and, once released, again under the verdict it then gets.  inbound: protected-side
    packets by the engine's status.  tun_in/tun_out: clear-side packets read/written (ICMP errors written
    back included); esp_in: protected-side packets received; sent: packets handed to the kernel (ESP, bypass
    and fragments); esp_out_bytes: bytes of the ESP packets among them; fragments: inner fragments made
    from too-big packets without DF, each sent as its own ESP packet; sa_refused: SAs from the region the
    engine would not take (logged with the reason, e.g. an AH SA on an engine without AH)."""

    verdicts: np.ndarray = field(default_factory=lambda: np.zeros(kio.V_MAX, dtype=np.uint64))
    inbound: np.ndarray = field(default_factory=lambda: np.zeros(N_STATUS, dtype=np.uint64))
    tun_in: int = 0
    tun_in_bytes: int = 0
    tun_out: int = 0
    tun_out_bytes: int = 0
    esp_in: int = 0
    esp_in_bytes: int = 0
    sent: int = 0
    esp_out_bytes: int = 0
    send_failed: int = 0
    held_dropped: int = 0
    fragments: int = 0
    ike_misdirected: int = 0
    gro_dropped: int = 0
    ah6_unrebuilt: int = 0          # IPv6 AH whose headers in front of AH could not be put back (kio_recv_ah6)
    sa_refused: int = 0

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: int(getattr(self, k)) for k in _SCALARS}
        d["outbound"] = {kio.VERDICT_NAMES[i]: int(v) for i, v in enumerate(self.verdicts) if v}
        d["inbound"] = {Status(i).label: int(v) for i, v in enumerate(self.inbound)
                        if v and i in Status._value2member_map_}
        return d

    def restore(self, d: dict[str, Any]) -> None:
        """Continue from counters a previous fastpath wrote (as_dict's shape); unknown names are skipped."""
        for k in _SCALARS:
            v = d.get(k)
            if isinstance(v, int) and v >= 0:
                setattr(self, k, v)
        by_name = {name: i for i, name in kio.VERDICT_NAMES.items()}
        for name, v in (d.get("outbound") or {}).items():
            if name in by_name and isinstance(v, int) and v >= 0:
                self.verdicts[by_name[name]] = v
        by_label = {s.label: int(s) for s in Status if int(s) < N_STATUS}
        for label, v in (d.get("inbound") or {}).items():
            if label in by_label and isinstance(v, int) and v >= 0:
                self.inbound[by_label[label]] = v


def batch_bytes(kb: kio.KBatch, n: int, sel: np.ndarray | None = None, want: int = 0) -> int:
    """Bytes in kb's first n packets (only those with sel[i] == want when sel is given): one C call."""
    return int(kio.lib.kio_bytes(kb.c, n, kio.ffi.NULL if sel is None else kio.ffi.from_buffer(sel), want))


def status_path(shm_path: str) -> str:
    """Where the fastpath leaves its totals for control (beside the region)."""
    return status_file.status_path(shm_path, "fastpath")


def write_status(shm_path: str, totals: Totals, started: float) -> None:
    """Write the totals; a failure only costs the operator a fresh view."""
    status_file.write_json(status_path(shm_path), {"pid": os.getpid(), "started": started, "written": time.time(),
                                                   "totals": totals.as_dict()})


def read_status(shm_path: str) -> dict[str, Any] | None:
    """The last file a fastpath wrote on this region (None if there is none or it is unreadable)."""
    data = status_file.read_json(status_path(shm_path))
    return data if data is not None and isinstance(data.get("totals"), dict) else None


def remove_status(shm_path: str) -> None:
    status_file.remove(status_path(shm_path))
