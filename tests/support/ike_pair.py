"""The one in-memory IKE pair of the tests: two of our sans-IO IKE SAs (and every SA they grow) wired
together in process on a virtual clock, with their CHILD SAs checked through a real ESP engine.

Datagrams are routed by IKE SPI (an IKE rekey or a reauthentication adds SAs on both sides); an
IKE_SA_INIT request with a zero responder SPI goes to the live SA that already holds its initiator SPI
(a retransmission, answered from the cache) or makes a new responder on an answering side.  With
``nat`` the first initiator's datagrams leave through a NAT: source NAT_PUBLIC, port + 40000.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cdefs.sa import Direction
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.constants import NATT_KEEPALIVE, Flag
from control.ike.events import ChildSaEstablished, IkeSaRekeyed, State
from control.ike.message import TrafficSelectorEntry as TS
from control.ike.message import parse_header
from control.ike.sa import IkeSA
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.status import Status
from support.packets import ipv4, udp

A, B = ("192.0.2.1", 500), ("198.51.100.2", 500)
I_ADDR, R_ADDR = A, B
NAT_PUBLIC = "203.0.113.7"
NAT_PORT_SHIFT = 40000
PSK = b"correct horse battery staple"

# drop(side, n, data): True loses the n-th datagram (from 0) that side sent
Drop = Callable[[str, int, bytes], bool]


def child(name="net", local="10.1.0.0/16", remote="10.2.0.0/16", esp="aes128gcm16", ah="") -> ChildConfig:
    """A CHILD SA's configuration; with ``ah`` (AH proposals) an AH child instead of ESP."""
    return ChildConfig(name, [TS.from_network(n) for n in local.split(",")],
                       [TS.from_network(n) for n in remote.split(",")], esp_proposals=esp, ah_proposals=ah)


def configs(ike_i="aes128gcm16-prfsha256-x25519", ike_r=None, esp_i="aes128gcm16", esp_r=None, psk_r=PSK,
            i_child=None, r_child=None, encap=False) -> tuple[IkeConfig, IkeConfig]:
    """A handshake's two configurations: one CHILD SA each, every knob of IKE_SA_INIT/IKE_AUTH at hand."""
    ci = IkeConfig(Identity.from_string("gw-a.example"), PSK, Identity.from_string("gw-b.example"),
                   ike_proposals=ike_i, children=[i_child or child(esp=esp_i)], encap=encap)
    cr = IkeConfig(Identity.from_string("gw-b.example"), psk_r, Identity.from_string("gw-a.example"),
                   ike_proposals=ike_r or ike_i,
                   children=[r_child or child(local="10.2.0.0/16", remote="10.1.0.0/16", esp=esp_r or esp_i)])
    return ci, cr


def cfgs(ike="aes128gcm16-prfsha256-x25519", esp="aes128gcm16", esp_b=None, **kw) -> tuple[IkeConfig, IkeConfig]:
    """The exchanges' two configurations: b knows a second CHILD SA for CREATE_CHILD_SA; ``kw`` to both."""
    ca = IkeConfig(Identity.from_string("a.example"), PSK, Identity.from_string("b.example"), ike_proposals=ike,
                   children=[child(esp=esp)], **kw)
    cb = IkeConfig(Identity.from_string("b.example"), PSK, Identity.from_string("a.example"), ike_proposals=ike,
                   children=[child(local="10.2.0.0/16", remote="10.1.0.0/16", esp=esp_b or esp),
                             child("second", local="10.20.0.0/16", remote="10.10.0.0/16", esp=esp_b or esp)],
                   **kw)
    return ca, cb


class Pair:
    # the sides that answer an IKE_SA_INIT request with a new responder IKE SA
    answering = ("b",)

    def __init__(self, ca: IkeConfig, cb: IkeConfig, drop: Drop | None = None, *, nat: bool = False):
        self.ca, self.cb = ca, cb
        self.sas: dict[str, list[IkeSA]] = {
            "a": [IkeSA(ca, initiator=True, local=A, remote=(B[0], ca.remote_port))], "b": []}
        self.events: dict[str, list] = {"a": [], "b": []}
        self.now = 0.0
        self.nat = nat
        self.drop = drop or (lambda side, n, data: False)
        self.sent = {"a": 0, "b": 0}
        self.wire: list[bytes] = []     # every datagram sent, lost or not, in order

    @property
    def i(self) -> IkeSA:
        """The first initiator."""
        return self.sas["a"][0]

    @property
    def r(self) -> IkeSA:
        """The newest SA on b (in a handshake: the responder)."""
        return self.sas["b"][-1]

    def live(self, side) -> list[IkeSA]:
        return [s for s in self.sas[side] if s.state != State.DEAD]

    def ike(self, side) -> IkeSA:
        (s,) = [s for s in self.live(side) if s.state == State.ESTABLISHED]
        return s

    def _source(self, to: str, port: int) -> tuple[str, int]:
        """Where a datagram to ``to`` on ``port`` comes from, as the receiver sees it."""
        if to == "b":
            return (NAT_PUBLIC, NAT_PORT_SHIFT + port) if self.nat else (A[0], port)
        return B[0], port

    def _deliver(self, to, data, port):
        here = (A if to == "a" else B)[0]
        src = self._source(to, port)
        if data == NATT_KEEPALIVE:      # no SPI to route by: every live SA of that side sees it
            for sa in self.live(to):
                sa.receive_datagram(data, port, src, self.now)
            return
        body = data[4:] if port == 4500 else data
        hdr = parse_header(body)
        key = hdr.spi_r if hdr.flags & Flag.INITIATOR else hdr.spi_i
        if hdr.flags & Flag.INITIATOR and key == bytes(8):
            known = [s for s in self.live(to) if not s.initiator and s.spi_i == hdr.spi_i]
            if known:
                key = known[-1].our_spi
            elif to in self.answering:
                sa = IkeSA(self.cb if to == "b" else self.ca, initiator=False, local=(here, port), remote=src)
                self.sas[to].append(sa)
                key = sa.our_spi
        for sa in self.sas[to]:
            if sa.our_spi == key:
                sa.receive_datagram(data, port, src, self.now)
                return

    def _collect(self):
        for side in ("a", "b"):
            for sa in list(self.sas[side]):
                while (e := sa.next_event()) is not None:
                    self.events[side].append(e)
                    self._collected(side, e)

    def _collected(self, side, e) -> None:
        """Each event as it is collected: an IKE rekey's new SA joins its side."""
        if isinstance(e, IkeSaRekeyed):
            self.sas[side].append(e.new_sa)

    def pump(self) -> bool:
        flight = []
        for side in ("a", "b"):
            for sa in self.sas[side]:
                for d in sa.datagrams_to_send():
                    self.wire.append(d.data)
                    n = self.sent[side]
                    self.sent[side] += 1
                    if not self.drop(side, n, d.data):
                        flight.append(("b" if side == "a" else "a", d))
        for to, d in flight:
            port = d.remote[1] - NAT_PORT_SHIFT if self.nat and to == "a" else d.remote[1]
            self._deliver(to, d.data, port)
        self._collect()
        return bool(flight)

    def run(self, until: float | None = None, max_steps: int = 200, *, initiator_clock: bool = False):
        """Move datagrams until none are in flight; then, with ``until``, jump to every side's next timer up
        to that time, or with ``initiator_clock`` to the first initiator's next timer (a handshake's
        retransmissions, however long they take); otherwise stop."""
        if self.i.state == State.CREATED:
            self.i.initiate(self.now)
        for _ in range(max_steps):
            if self.pump():
                continue
            if initiator_clock:
                t = self.i.get_timer()
                if t is None:
                    break
                self.now = t
                self.i.handle_timer(self.now)
                self._collect()
                continue
            timers = [t for s in self.sas["a"] + self.sas["b"] if (t := s.get_timer()) is not None]
            if not timers or until is None or min(timers) > until:
                break
            self.now = max(self.now, min(timers))
            for s in self.sas["a"] + self.sas["b"]:
                s.handle_timer(self.now)
            self._collect()
        if until is not None:
            self.now = max(self.now, until)
        return self

    def of(self, side, cls):
        return [e for e in self.events[side] if isinstance(e, cls)]

    def clear(self):
        self.events = {"a": [], "b": []}


def handshake(ci: IkeConfig, cr: IkeConfig, drop: Drop | None = None, *, nat: bool = False,
              max_steps: int = 200) -> Pair:
    """IKE_SA_INIT and IKE_AUTH (and their retransmissions) between a and b, as far as they go."""
    return Pair(ci, cr, drop, nat=nat).run(max_steps=max_steps, initiator_clock=True)


def up(**kw) -> Pair:
    """An established pair from ``cfgs(**kw)``, its set-up events cleared."""
    p = Pair(*cfgs(**kw)).run()
    assert p.ike("a").state == p.ike("b").state == State.ESTABLISHED
    p.clear()
    return p


def assert_esp_works(a: ChildSaEstablished, b: ChildSaEstablished) -> None:
    """A packet from a's outbound SA decrypts on b's inbound SA, and back, inside the negotiated selectors;
    on the wire the payload is not in the clear."""
    assert a.outbound.spi == b.inbound.spi and a.inbound.spi == b.outbound.spi
    engine = create("best")
    for i, (sa, d) in enumerate(((a.outbound, Direction.OUT), (b.inbound, Direction.IN),
                                 (b.outbound, Direction.OUT), (a.inbound, Direction.IN))):
        engine.add_sa(i, sa, d)
    for out_idx, x in ((0, a), (2, b)):
        src, dst = str(x.local_ts[0].start + 5), str(x.remote_ts[0].start + 9)
        inner = ipv4(src, dst, 17, udp(src, dst, 1000, 2000, os.urandom(100)))
        batch = Batch(capacity=1)
        batch.append(inner, out_idx)
        engine.outbound(batch)
        assert Status(int(batch.status[0])) == Status.OK
        wire = batch.packet(0)
        assert inner[20:] not in wire
        rx = Batch(capacity=1)
        rx.append(wire)
        engine.inbound(rx)
        assert Status(int(rx.status[0])) == Status.OK
        assert rx.packet(0) == inner
    engine.close()
