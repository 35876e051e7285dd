"""An AH CHILD SA as the IKE core derives it, written to the region by control and synced into an engine:
every engine with AH (all present ones: the reference and the C engines) installs it and verifies the
peer's packets; an engine that does not serve the SA's AH algorithm refuses it, which the fastpath logs as
"no AH in engine X" and counts, without raising."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from support.engines import AH_ENGINES
from support.ike_pair import child, configs, handshake
from support.packets import ipv4, udp

from cdefs.sa import Direction
from control.ike.events import ChildSaEstablished
from control.sa_text import esp_proposal_name
from control.shm import Capacities, ControlRegion
from fastpath.ah_ref import AhSession
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.region_sync import sync_region
from fastpath.shm import FastpathRegion
from fastpath.status import Status


@pytest.fixture
def ah_child() -> tuple[ChildSaEstablished, ChildSaEstablished]:
    net = handshake(*configs(i_child=child(ah="sha256-esn"),
                             r_child=child(local="10.2.0.0/16", remote="10.1.0.0/16", ah="sha256-esn")))
    (a,), (b,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    return a, b


@pytest.fixture
def regions(shm_path):
    c = ControlRegion.create(shm_path, Capacities(n_sa=16, n_spd=4, cmd_ring=16, evt_ring=16))
    f = FastpathRegion.attach(shm_path)
    yield c, f
    f.close()
    c.close()


@pytest.mark.parametrize("name", AH_ENGINES)
def test_engine_installs_and_verifies_the_negotiated_ah_sa(name, ah_child, regions, caplog) -> None:
    a, b = ah_child
    assert esp_proposal_name(b.suite) == "AH/hmac-sha256-128/ESN"
    control, fast = regions
    h = control.install_sa(b.inbound, Direction.IN)
    engine = create(name)
    seen = []
    with caplog.at_level(logging.WARNING, logger="ipsecgw.fastpath"):
        r = sync_region(fast, engine, lambda slot, sa, d: seen.append((slot, sa, d)))
    assert not r.rejected and r.installed == [h.slot] and seen[0][1].proto == "ah"
    assert "not installed" not in caplog.text
    src, dst = str(a.local_ts[0].start + 5), str(a.remote_ts[0].start + 9)
    inner = ipv4(src, dst, 17, udp(src, dst, 1000, 2000, b"x" * 40))
    wire = AhSession(a.outbound, Direction.OUT).outbound(inner, 4096)
    rx = Batch(capacity=1)
    rx.append(wire)
    engine.inbound(rx)
    assert Status(int(rx.status[0])) == Status.OK and rx.packet(0) == inner
    engine.close()


@pytest.mark.parametrize("name", [n for n in AH_ENGINES if n != "reference"])
def test_engine_without_the_ah_algorithm_refuses_by_name(name, ah_child, regions, caplog) -> None:
    # every engine here serves every AH algorithm; one that did not (a build without a primitive) is
    # what this path is for, so the C engine is told it has none
    a, b = ah_child
    control, fast = regions
    engine = create(name)
    engine.ah_algorithms = ()
    h = control.install_sa(b.inbound, Direction.IN)
    esp = control.install_sa(dataclasses.replace(b.inbound, proto="esp", enc="aes-gcm-128", enc_key=bytes(20),
                                                 integ=None, integ_key=b"", spi=0x4242), Direction.IN)
    with caplog.at_level(logging.WARNING, logger="ipsecgw.fastpath"):
        r = sync_region(fast, engine, lambda slot, sa, d: None)
    assert list(r.rejected) == [h.slot] and esp.slot in r.installed     # the ESP SA beside it is unaffected
    assert f"no AH in engine {engine.name}" in caplog.text
    assert b.inbound.integ_key.hex() not in caplog.text
    engine.close()
