"""What one IKE set-up costs our responder, without sockets or a second process.

Our initiator (``IkeSA``) and the responder's receive path (``IkeUdpEndpoint._received``, the gate,
routing, the sans-IO core, events) run in one process; datagrams are handed over in memory.  Only
the responder's calls are measured: CPU time per set-up (IKE_SA_INIT, IKE_AUTH with the CHILD SA,
the IKE SA's Delete), split by exchange.  The same settings as the set-up benchmark
(bench/test_ike_setup_rate.py): PSK, aes128gcm16-prfsha256-x25519, ESP aes128gcm16.

With ``--callgrind`` the responder's calls are the only thing valgrind's callgrind counts, which
gives instruction counts that a busy host does not move (a two-line client request compiled with
cffi into a temporary directory; needs a C compiler and valgrind's headers):

    valgrind --tool=callgrind --collect-atstart=no .venv/bin/python bench/ike_setup_cost.py --setups 40 --callgrind
    # Collected / setups = instructions per set-up of the responder

Without it:  .venv/bin/python bench/ike_setup_cost.py --setups 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ike_loadgen import INITIATOR_TS, RESPONDER_ID, RESPONDER_TS, _child

from control.ike.config import Identity, IkeConfig
from control.ike.cookie import ResponderGate
from control.ike.events import Address, ChildSaEstablished, State
from control.ike.sa import IkeSA
from control.ike_udp import IkeUdpEndpoint

A_IP, B_IP = "192.0.2.1", "192.0.2.2"
PHASES = ("IKE_SA_INIT", "IKE_AUTH", "INFORMATIONAL Delete")


class _Handle:
    def __init__(self, when: float):
        self._when = when

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        pass


class _Clock:
    """The two things IkeUdpEndpoint asks its event loop: the time, and a timer it may cancel."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, _cb: Callable[[], None]) -> _Handle:
        return _Handle(when)

    def is_closed(self) -> bool:
        return True


def _callgrind_toggle() -> Callable[[], None]:
    from cffi import FFI
    ffi = FFI()
    ffi.cdef("void cg_toggle(void);")
    ffi.set_source("_ike_cg_toggle", "#include <valgrind/callgrind.h>\n"
                   "void cg_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }")
    with tempfile.TemporaryDirectory(prefix="ike-cg-") as tmp:
        ffi.compile(tmpdir=tmp, verbose=False)
        sys.path.insert(0, tmp)
        try:
            from _ike_cg_toggle import lib  # type: ignore[import-not-found]
        finally:
            sys.path.remove(tmp)
    return lib.cg_toggle        # the loaded library stays mapped after its file is gone


def measure(setups: int, *, warmup: int = 20, callgrind: bool = False, psk: bytes = b"bench-ike-setup-psk",
            ike: str = "aes128gcm16-prfsha256-x25519", esp: str = "aes128gcm16") -> dict[str, Any]:
    cfg = IkeConfig(Identity.from_string(RESPONDER_ID), psk, None, ike_proposals=ike,
                    children=[_child(RESPONDER_TS, INITIATOR_TS, esp)])
    ep = IkeUdpEndpoint(B_IP, (500, 4500), responder_config=cfg,
                        gate=ResponderGate(cookie_threshold=100_000, max_half_open=100_000))
    clock = _Clock()
    ep._loop = clock  # type: ignore[assignment]    # no sockets: only time and timers are asked for
    replies: list[tuple[bytes, int, Address]] = []
    ep.send_raw = lambda data, port, remote: replies.append((data, port, remote))  # type: ignore[method-assign]
    child = _child(INITIATOR_TS, RESPONDER_TS, esp)
    configs = [IkeConfig(Identity.from_string(f"@g{i}.bench"), psk, Identity.from_string(RESPONDER_ID),
                         ike_proposals=ike, children=[child], local_port=20000 + 2 * i,
                         local_natt_port=20001 + 2 * i) for i in range(64)]
    toggle = _callgrind_toggle() if callgrind else None
    cpu = [0.0] * len(PHASES)

    def one(n: int, measured: bool) -> None:
        c = configs[n % len(configs)]
        sa = IkeSA(c, initiator=True, local=(A_IP, c.local_port), remote=(B_IP, 500))
        sa.initiate(clock.now)
        phase, done = 0, False
        while out := sa.datagrams_to_send():
            clock.now += 0.0001
            for d in out:
                if measured and toggle:
                    toggle()
                t = time.thread_time()
                ep._received(d.data, d.remote[1], (A_IP, d.local_port))
                if measured:
                    cpu[min(phase, len(cpu) - 1)] += time.thread_time() - t
                    if toggle:
                        toggle()
            phase += 1
            for data, port, remote in replies:
                sa.receive_datagram(data, remote[1], (B_IP, port), clock.now)
            replies.clear()
            while (ev := sa.next_event()) is not None:
                if isinstance(ev, ChildSaEstablished):
                    sa.delete(clock.now)
                    done = True
        if not done or sa.state != State.DEAD:
            raise RuntimeError(f"set-up {n} did not complete ({sa.state})")

    for n in range(warmup):
        one(n, False)
    for n in range(setups):
        one(n, True)
    total = sum(cpu)
    return {"setups": setups, "responder_cpu_us_per_setup": round(1e6 * total / setups, 1),
            "per_exchange_us": {name: round(1e6 * t / setups, 1) for name, t in zip(PHASES, cpu, strict=True)},
            "responder_setups_per_cpu_s": round(setups / total, 1) if total else None,
            "sas_left": len(ep.sas)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/ike_setup_cost.py", description=__doc__.split("\n")[0])
    p.add_argument("--setups", type=int, default=1000)
    p.add_argument("--callgrind", action="store_true", help="count only the responder's calls under callgrind")
    a = p.parse_args(argv)
    print(json.dumps(measure(a.setups, callgrind=a.callgrind)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
