"""A thin asyncio UDP shell around the sans-IO IKE core (control/ike/, which imports no sockets and no asyncio).

One socket on the IKE port and one on the NAT-T port of a local address, on
control's one UDP layer (``control.udp_sockets``: batched reads, queued sends).
Datagrams are routed to IKE SAs by our SPI; the core decides everything else.
Datagrams on the NAT-T port that are not IKE (ESP-in-UDP, keepalives) go to
``on_esp`` so a caller (the fastpath later, the interop tests now) can take them.
New IKE_SA_INIT requests pass a ``ResponderGate`` (cookies under load, bounded
half-open state); IKE SAs that replace others (``IkeSaRekeyed``) are routed to
as soon as they exist, and dead ones are forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from control.ike.config import IkeConfig
from control.ike.constants import NATT_KEEPALIVE, NON_ESP_MARKER
from control.ike.cookie import ResponderGate
from control.ike.events import Address, IkeSaReauthenticated, IkeSaReauthStarted, IkeSaRekeyed, State
from control.ike.sa import IkeSA
from control.udp_sockets import READ_BATCH, UdpSocket

__all__ = ["IkeUdpEndpoint", "READ_BATCH"]

# per datagram: module globals, not enum class attributes (EnumType's __getattr__ hook) or isinstance chains
_DEAD, _CONNECTING, _CREATED = State.DEAD, State.CONNECTING, State.CREATED
_NEW_SA_EVENTS = frozenset((IkeSaRekeyed, IkeSaReauthStarted))      # events that hand us a new IkeSA to route


class IkeUdpEndpoint:
    """Drives IKE SAs over real sockets; ``responder_config`` (if set) answers new IKE_SA_INIT requests."""

    def __init__(self, local_ip: str, config_ports: tuple[int, int] = (500, 4500),
                 responder_config: IkeConfig | None = None,
                 on_event: Callable[[IkeSA, object], None] | None = None,
                 on_esp: Callable[[bytes, Address], None] | None = None,
                 gate: ResponderGate | None = None):
        self.local_ip = local_ip
        self.gate = gate or ResponderGate(natt_port=config_ports[1])
        self.ports = config_ports
        self.responder_config = responder_config
        self.on_event = on_event
        self.on_esp = on_esp
        self.sas: dict[bytes, IkeSA] = {}
        self._half_open: dict[tuple[bytes, str], IkeSA] = {}
        self._half_open_key: dict[IkeSA, tuple[bytes, str]] = {}     # the other way round, to prune
        self._socks: dict[int, UdpSocket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.keepalives_received = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            for port in self.ports:
                self._socks[port] = s = UdpSocket.bind(self.local_ip, port)
                s.watch(self._loop, self._readable)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        for s in self._socks.values():
            s.close()
        self._socks.clear()

    def initiate(self, config: IkeConfig, remote_ip: str) -> IkeSA:
        sa = IkeSA(config, initiator=True, local=(self.local_ip, config.local_port),
                   remote=(remote_ip, config.remote_port))
        self.sas[sa.our_spi] = sa
        sa.initiate(self._now())
        self._flush(sa)
        return sa

    def send_raw(self, data: bytes, local_port: int, remote: Address) -> None:
        """Send a UDP payload from one of our ports (ESP-in-UDP from the tests)."""
        self._socks[local_port].send(data, remote)

    def _readable(self, s: UdpSocket) -> None:
        s.read_batch(self._received)

    # -- internals ---------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _received(self, data: bytes, port: int, remote: Address) -> None:
        natt = port == self.ports[1]
        if natt and not data.startswith(NON_ESP_MARKER):
            if data == NATT_KEEPALIVE:
                self.keepalives_received += 1       # RFC 3948 §2.3: nothing to do but count it
            elif self.on_esp:
                self.on_esp(data, remote)
            return
        msg = data[4:] if natt else data
        if len(msg) < 28:
            return
        spi_i, spi_r, flags = msg[:8], msg[8:16], msg[19]
        from_initiator = bool(flags & 0x08)
        sa = self.sas.get(spi_r if from_initiator else spi_i)
        if sa is None and from_initiator and spi_r == bytes(8) and not flags & 0x20 and self.responder_config:
            key = (spi_i, remote[0])
            sa = self._half_open.get(key)
            if sa is None or sa.state is _DEAD:
                if sa is not None:
                    self._half_open_key.pop(sa, None)
                n = len(self._half_open)
                if n >= self.gate.cookie_threshold:
                    n = self.half_open()        # a decision hangs on it: prune what changed outside _flush
                ok, reply = self.gate.check(data, port, remote, self._now(), n)
                if reply is not None:
                    self.send_raw(reply.data, reply.local_port, reply.remote)
                if not ok:
                    return
                sa = IkeSA(self.responder_config, initiator=False, local=(self.local_ip, port), remote=remote)
                self._half_open[key] = sa
                self._half_open_key[sa] = key
                self.sas[sa.our_spi] = sa
        if sa is None:
            return
        sa.receive_datagram(data, port, remote, self._now())
        self._flush(sa)

    def half_open(self) -> int:
        """Responder IKE SAs that have not completed IKE_AUTH (dead and finished ones are pruned)."""
        for sa in list(self._half_open.values()):
            self._prune_half_open(sa)
        return len(self._half_open)

    def _prune_half_open(self, sa: IkeSA) -> None:
        if sa.state is not _CONNECTING and sa.state is not _CREATED:
            key = self._half_open_key.pop(sa, None)
            if key is not None and self._half_open.get(key) is sa:
                del self._half_open[key]

    def _flush(self, sa: IkeSA) -> None:
        send = self.send_raw
        for d in sa.datagrams_to_send():
            send(d.data, d.local_port, d.remote)
        on_event = self.on_event
        while (ev := sa.next_event()) is not None:
            kind = ev.__class__
            if kind in _NEW_SA_EVENTS:
                self.sas[ev.new_sa.our_spi] = ev.new_sa
            if on_event:
                on_event(sa, ev)
            if kind in _NEW_SA_EVENTS:
                self._flush(ev.new_sa)
            elif kind is IkeSaReauthenticated:
                self._flush(ev.old_sa)      # it queued its Delete
        if sa.state is _DEAD and self.sas.get(sa.our_spi) is sa:
            del self.sas[sa.our_spi]
        if sa in self._half_open_key:
            # every state change passes here, so the count stays exact without a scan per new request
            self._prune_half_open(sa)
        self._arm_for(sa)

    def _arm_for(self, sa: IkeSA) -> None:
        """After one SA changed: only an earlier deadline moves the wake-up.  Scanning every SA per
        datagram cost O(SAs) and dominated a busy responder; a wake-up left too early is harmless,
        since ``_on_timer`` hands the time to every SA and then re-arms from all of them."""
        t = sa.get_timer()
        if t is not None and (self._timer is None or t < self._timer.when()):
            self._arm_at(t)

    def _arm_at(self, when: float) -> None:
        if self._timer:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer) if self._loop else None

    def _arm(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None
        timers = [t for t in (sa.get_timer() for sa in self.sas.values()) if t is not None]
        if timers:
            self._arm_at(min(timers))

    def _on_timer(self) -> None:
        self._timer = None
        now = self._now()
        for sa in list(self.sas.values()):
            sa.handle_timer(now)
            self._flush(sa)
        self._arm()

    def call(self, sa: IkeSA, op: Callable[..., object], *args: object) -> None:
        """Run one of the SA's operations (``IkeSA.rekey_child``, ``IkeSA.delete``...) now and send what it
        produced."""
        op(sa, self._now(), *args)
        self._flush(sa)
