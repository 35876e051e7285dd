"""Which too-big packets get an ICMP error from the kernel-I/O classifier (cdefs/ip/icmp_too_big.h, shared with the
DPDK gateway worker): never one about an ICMP error (RFC 1122 3.2.2: ICMPv4 types 3, 4, 5, 11, 12; RFC 4443
2.4(e): ICMPv6 types below 128), but every other ICMP message gets one like any packet, echo or not (timestamp,
RFC 8335 extended echo).  The errors themselves are checked with scapy in tests/unit/test_fastpath_classify.py."""

from __future__ import annotations

import numpy as np
import pytest
from support.sa import make_sa

from cdefs.sa import Direction
from fastpath.batch import Batch

kio = pytest.importorskip("fastpath.io.kio")
if kio.lib is None:
    pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}", allow_module_level=True)

from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.layers.inet6 import ICMPv6Unknown, IPv6  # noqa: E402

from control.shm import PROTECT, ControlRegion, Policy  # noqa: E402
from fastpath.classify import Classifier, esp_overhead, inner_mtu  # noqa: E402
from fastpath.shm import Capacities, FastpathRegion  # noqa: E402

V4_ERRORS = (3, 4, 5, 11, 12)
V4_OTHERS = (0, 8, 13, 14, 42)
V6_ERRORS = (1, 2, 3, 4)
V6_OTHERS = (128, 129, 160)


@pytest.fixture
def classify(tmp_path):
    ctl = ControlRegion.create(tmp_path / "i.shm", Capacities(n_sa=4, n_spd=8, cmd_ring=16, evt_ring=16))
    fp = FastpathRegion.attach(tmp_path / "i.shm")
    sa = make_sa("aes-gcm-128")
    slot = ctl.install_sa(sa, Direction.OUT).slot
    ctl.add_policy(Policy("10.1.0.0/16", "10.2.0.0/16", action=PROTECT, priority=10), (slot,), commit=False)
    ctl.add_policy(Policy("fd00:1::/64", "fd00:2::/64", action=PROTECT, priority=10), (slot,))
    cls = Classifier(fp, outer_mtu=1500)
    cls.set_sa(slot, sa)
    mtu = inner_mtu(1500, *esp_overhead(sa))
    b = Batch(16, mtu=1600)
    kb = kio.KBatch(b)
    verdict = np.zeros(16, dtype=np.uint8)

    def run(packets: list[bytes]) -> list[int]:
        b.clear()
        b.extend(packets)
        cls.classify(kb, b.n, verdict)
        return [int(v) for v in verdict[:b.n]]

    yield run, mtu
    fp.close()
    ctl.close()


def test_icmp_errors_are_never_answered_with_one(classify) -> None:
    run, mtu = classify

    def v4(t: int) -> bytes:
        p = IP(src="10.1.0.5", dst="10.2.0.7", flags="DF") / ICMP(type=t)
        return bytes(p / bytes(mtu + 1 - len(p)))

    def v6(t: int) -> bytes:
        p = IPv6(src="fd00:1::5", dst="fd00:2::7") / ICMPv6Unknown(type=t)
        return bytes(p / bytes(mtu + 1 - len(p)))

    assert run([v4(t) for t in V4_ERRORS + V4_OTHERS]) == \
        [kio.V_TOO_BIG] * len(V4_ERRORS) + [kio.V_ICMP] * len(V4_OTHERS)
    assert run([v6(t) for t in V6_ERRORS + V6_OTHERS]) == \
        [kio.V_TOO_BIG] * len(V6_ERRORS) + [kio.V_ICMP] * len(V6_OTHERS)
    # one byte smaller, every one of them fits and is protected
    small = IP(src="10.1.0.5", dst="10.2.0.7", flags="DF") / ICMP(type=3)
    assert run([bytes(small / bytes(mtu - len(small)))]) == [kio.V_PROTECT]
