"""The order in which control acts on a CHILD SA rekey, seen the way the fastpath sees the region.

Two real ``Daemon`` objects (real IKE core, real shared-memory regions) exchange their datagrams
through an in-process wire on a virtual clock, so every datagram can be paired with what the
sender's fastpath would find in the region at the moment it left:

- the responder's new inbound SA is installed before the CREATE_CHILD_SA response leaves (the
  response lets the peer send on it at once: a later install lost packets under load);
- the responder keeps sending on the old pair until the initiator's Delete of it arrives (the
  initiator may not have installed the new pair yet), or at the latest after OUTBOUND_SWITCH_MAX;
- with ``rekeyed_inbound_delay`` (the gateway's setting) the old inbound SA outlives the Delete.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from support.daemon_harness import gateway_yaml, region_sas

from cdefs.sa import Direction
from control.config import load_config
from control.daemon import OUTBOUND_SWITCH_MAX, Daemon
from control.ike.events import Datagram
from fastpath.shm import FastpathRegion

A_IP, B_IP = "198.51.100.1", "198.51.100.2"
A_NET, B_NET = "10.1.0.0/16", "10.2.0.0/16"


@dataclass
class View:
    """What a fastpath attached to the sender's region would use at that moment."""

    inbound_spis: set[int]
    outbound_spi: int | None        # SA the outbound policy for A_NET <-> B_NET points at


@dataclass
class Sent:
    sender: Wired
    local_ip: str
    datagram: Datagram
    view: View


class Wired(Daemon):
    """A daemon without sockets or an event loop: a shared virtual clock, datagrams onto a list."""

    def __init__(self, path: Path, clock: list[float], wire: list[Sent], src: str, dst: str):
        super().__init__(load_config(path))
        self.clock, self.wire, self.src, self.dst = clock, wire, src, dst
        self._open_region()
        self.fp = FastpathRegion.attach(self.gw.shm_path)

    def _now(self) -> float:
        return self.clock[0]

    def view(self) -> View:
        ins = {sa.spi for sa, d in region_sas(Path(self.gw.shm_path)).values() if d == Direction.IN}
        assert all(self.fp.lookup_spi(spi) is not None for spi in ins)
        m = self.fp.lookup_policy(self.src, self.dst)
        out = None
        if m is not None and m.sas:
            cur = self.fp.read_slot(m.sas[0])
            out = int(cur.p.spi) if cur is not None else None
        return View(ins, out)

    def send(self, local_ip: str, d: Datagram) -> None:
        self.wire.append(Sent(self, local_ip, d, self.view()))

    def close(self) -> None:
        self.fp.close()
        assert self.region is not None
        self.region.close()


@pytest.fixture
def pair(tmp_path: Path):
    clock, wire = [1000.0], []
    daemons = []
    for name, local, remote, lts, rts in (("a", A_IP, B_IP, A_NET, B_NET), ("b", B_IP, A_IP, B_NET, A_NET)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(gateway_yaml(shm=tmp_path / f"{name}.shm", sock=tmp_path / f"{name}.sock", ike_port=500,
                                    natt_port=4500, local=local, remote=remote, remote_port=500,
                                    remote_natt_port=4500, local_id=f"gw-{name}.example",
                                    remote_id=f"gw-{'b' if name == 'a' else 'a'}.example", local_ts=lts,
                                    remote_ts=rts, start_action="none", export_keys=False))
        daemons.append(Wired(cfg, clock, wire, lts.replace("0.0/16", "0.7"), rts.replace("0.0/16", "0.9")))
    a, b = daemons
    yield a, b, wire, clock
    for d in daemons:
        d.close()


def deliver(sent: Sent, to: Daemon) -> None:
    d = sent.datagram
    to.intake.received(d.data, d.remote[0], d.remote[1], (sent.local_ip, d.local_port))


def pump(a: Wired, b: Wired, wire: list[Sent], drop=lambda s: False) -> list[Sent]:
    """Deliver everything on the wire, oldest first, until it is quiet; returns what went."""
    went = []
    while wire:
        s = wire.pop(0)
        went.append(s)
        if not drop(s):
            deliver(s, b if s.sender is a else a)
    return went


def exchange(data: bytes) -> int:
    return data[18] if data[:4] != bytes(4) else data[22]


def up(a: Wired, b: Wired, wire: list[Sent]) -> None:
    conn = a.config.connections["peer"]
    a.initiate(conn, conn.children[0])
    pump(a, b, wire)
    assert len(a.children) == len(b.children) == 1
    assert (a.children[0].spi_in, a.children[0].spi_out) == (b.children[0].spi_out, b.children[0].spi_in)


def rekey_until_response(a: Wired, b: Wired, wire: list[Sent]) -> Sent:
    """A rekeys its CHILD SA; B answers.  Returns B's response, not yet delivered to A."""
    a.rekey_child(a.children[0], "test")
    request = wire.pop(0)
    assert exchange(request.datagram.data) == 36     # CREATE_CHILD_SA
    deliver(request, b)
    response = wire.pop(0)
    assert response.sender is b and exchange(response.datagram.data) == 36
    assert not wire
    return response


def test_responder_installs_inbound_before_its_response_and_sends_on_old_until_delete(pair) -> None:
    a, b, wire, clock = pair
    up(a, b, wire)
    old_b = b.children[0]
    response = rekey_until_response(a, b, wire)
    new_b = next(c for c in b.children if c is not old_b)

    # the response left with B's new inbound SA already where B's fastpath finds it, and B still sending
    # on the old pair
    assert new_b.spi_in in response.view.inbound_spis
    assert response.view.outbound_spi == old_b.spi_out
    assert b.view().outbound_spi == old_b.spi_out, "B must not use the new SA before A can have it"
    assert new_b.waits_for == [old_b]

    deliver(response, a)             # A installs, moves its outbound over and deletes the old pair
    new_a = next(c for c in a.children if c.spi_in == new_b.spi_out)
    delete = wire[0]
    assert delete.sender is a and exchange(delete.datagram.data) == 37      # INFORMATIONAL
    assert delete.view.outbound_spi == new_a.spi_out

    pump(a, b, wire)
    # B sends on the new pair now; without a linger the old pair is gone from its region
    assert b.view().outbound_spi == new_b.spi_out == new_a.spi_in
    assert b.view().inbound_spis == {new_b.spi_in}
    assert b.fp.lookup_spi(old_b.spi_in) is None
    assert new_b.waits_for == [] and new_b.switch_at is None


def test_old_inbound_outlives_the_delete_with_a_linger(pair) -> None:
    a, b, wire, clock = pair
    b.rekeyed_inbound_delay = 3.0
    up(a, b, wire)
    old_b = b.children[0]
    deliver(rekey_until_response(a, b, wire), a)
    pump(a, b, wire)
    new_b = next(c for c in b.children if c is not old_b)
    assert b.view().outbound_spi == new_b.spi_out
    assert b.fp.lookup_spi(old_b.spi_in) is not None, "in-flight packets on the old SA still need it"
    clock[0] += 3.1
    b._run_timers(clock[0])
    assert b.fp.lookup_spi(old_b.spi_in) is None
    assert old_b not in b.children


def test_responder_switches_anyway_when_the_delete_never_comes(pair) -> None:
    a, b, wire, clock = pair
    up(a, b, wire)
    old_b = b.children[0]
    deliver(rekey_until_response(a, b, wire), a)
    went = pump(a, b, wire, drop=lambda s: s.sender is a)       # A's Delete is lost
    assert any(exchange(s.datagram.data) == 37 for s in went)
    new_b = next(c for c in b.children if c is not old_b)
    assert b.view().outbound_spi == old_b.spi_out
    clock[0] += OUTBOUND_SWITCH_MAX - 0.5
    b._run_timers(clock[0])
    assert b.view().outbound_spi == old_b.spi_out
    clock[0] += 1.0
    b._run_timers(clock[0])
    assert b.view().outbound_spi == new_b.spi_out
    assert old_b.state == "REKEYED"


@pytest.mark.parametrize("seed", range(24))
def test_simultaneous_rekeys_never_send_on_an_sa_the_peer_lacks(pair, seed: int) -> None:
    """Both ends rekey at once (RFC 7296 2.8.1) and the datagrams arrive in a random order: one new pair
    survives, the redundant one is deleted, and at every step each side sends on an SA that the other
    side can decrypt (the gateway's inbound linger on).  Under the daemon's earlier rules a side could end
    up sending on the redundant pair its peer had just deleted, or on a freed slot."""

    a, b, wire, clock = pair
    rnd = random.Random(seed)
    b.rekeyed_inbound_delay = a.rekeyed_inbound_delay = 3.0
    up(a, b, wire)
    a.rekey_child(a.children[0], "test")
    b.rekey_child(b.children[0], "test")
    steps = 0
    while wire:
        pump(a, b, [wire.pop(rnd.randrange(len(wire)))])
        steps += 1
        assert steps < 100
        va, vb = a.view(), b.view()
        assert va.outbound_spi in vb.inbound_spis and vb.outbound_spi in va.inbound_spis, (steps, va, vb)
        if rnd.random() < 0.2:
            clock[0] += 0.2
            for d in (a, b):
                d._run_timers(clock[0])
    clock[0] += OUTBOUND_SWITCH_MAX + 3.5
    for d in (a, b):
        d._run_timers(clock[0])
    pump(a, b, wire)
    live_a = [c for c in a.children if c.state != "REKEYED"]
    live_b = [c for c in b.children if c.state != "REKEYED"]
    assert len(live_a) == len(live_b) == 1, (a.children, b.children)
    ca, cb = live_a[0], live_b[0]
    assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
    assert a.view().outbound_spi == ca.spi_out and b.view().outbound_spi == cb.spi_out
    assert a.view().inbound_spis == {ca.spi_in} and b.view().inbound_spis == {cb.spi_in}


def test_a_refused_rekey_leaves_the_child_rekeyable(pair) -> None:
    """The peer refuses a rekey (no proposal it accepts): the old pair keeps carrying the traffic and the
    next trigger (here the operator's) rekeys it again, instead of it waiting as REKEYING for its hard end."""
    a, b, wire, clock = pair
    up(a, b, wire)
    old_a = a.children[0]
    state_b = next(iter(b.ike_sas.values())).ike.children[0]
    good = state_b.config
    state_b.config = replace(good, esp_proposals="aes256gcm16")      # B now only accepts what A does not offer
    a.rekey_child(old_a, "test")
    pump(a, b, wire)
    assert a.children == [old_a] and old_a.state == "INSTALLED"
    assert a.view().outbound_spi == old_a.spi_out
    state_b.config = good
    a.rekey_child(old_a, "again")
    pump(a, b, wire)
    live = [c for c in a.children if c.state != "REKEYED"]
    assert len(live) == 1 and live[0] is not old_a and a.view().outbound_spi == live[0].spi_out


def test_old_outbound_sa_stays_until_the_old_pair_is_removed(pair) -> None:
    """When the SPD moves to the new outbound SA the fastpath may still hold a batch classified onto the old
    one: its slot stays (with its keys) until the old pair itself is removed, as the inbound half does.
    Freeing it at the switch dropped those packets as engine drops (docs/soak.md, 3 of 245 rekeys)."""
    a, b, wire, clock = pair
    a.rekeyed_inbound_delay = 3.0
    up(a, b, wire)
    old_a = a.children[0]
    deliver(rekey_until_response(a, b, wire), a)        # A switches its outbound and sends the Delete
    new_a = next(c for c in a.children if c is not old_a)
    assert a.view().outbound_spi == new_a.spi_out
    out_spis = {sa.spi for sa, d in region_sas(Path(a.gw.shm_path)).values() if d == Direction.OUT}
    assert out_spis == {old_a.spi_out, new_a.spi_out}
    pump(a, b, wire)                                    # the Delete's answer: the old pair is removed
    clock[0] += 3.1
    a._run_timers(clock[0])
    assert old_a not in a.children
    out_spis = {sa.spi for sa, d in region_sas(Path(a.gw.shm_path)).values() if d == Direction.OUT}
    assert out_spis == {new_a.spi_out}
