"""The one UDP path into IKE state: a datagram goes to the IKE SA our SPI names, and a new IKE_SA_INIT
request must first find a connection for its peer and pass the responder gate (``AdmissionGate``: the
request's shape, the half-open limits, COOKIEs past a threshold) before an ``IkeSA`` is made for it.
Non-IKE datagrams on the NAT-T port (ESP-in-UDP, keepalives) are only counted: they are the fastpath's."""

from __future__ import annotations

import logging
from typing import Protocol

from control.config import Config
from control.ike.constants import NATT_KEEPALIVE, NON_ESP_MARKER, ExchangeType
from control.ike.cp import AddressProvider
from control.ike.events import Address, Datagram
from control.ike.sa import IkeSA
from control.ike_sa_table import IkeSaTable
from control.responder_gate import AdmissionGate
from control.sa_records import IkeEntry
from fastpath.io.sockets import PROBE_MAGIC

__all__ = ["IkeIntake", "IntakeHost"]

log = logging.getLogger("ipsecgw.daemon")


class IntakeHost(Protocol):
    def now(self) -> float: ...

    def count(self, what: str) -> None: ...

    def send(self, local_ip: str, d: Datagram) -> None: ...

    def process(self, entry: IkeEntry) -> None: ...


class IkeIntake:
    def __init__(self, host: IntakeHost, config: Config, ike_sas: IkeSaTable, gate: AdmissionGate):
        self.host, self.config, self.ike_sas, self.gate = host, config, ike_sas, gate
        self.addresses: AddressProvider | None = None      # the daemon's pools: virtual IPs for responders

    def received(self, data: bytes, local_ip: str, port: int, remote: Address) -> None:
        natt = port == self.config.gateway.natt_port
        if natt and not data.startswith(NON_ESP_MARKER):
            # ESP-in-UDP is the fastpath's business; a NAT-T keepalive (RFC 3948 §2.3) is only counted, and
            # so is the fastpath's reuseport steering probe, which lands here whenever control's socket holds
            # the index it tests (fastpath/io/sockets.py): apart, so natt_non_ike counts only what is odd
            if data == NATT_KEEPALIVE:
                self.host.count("natt_keepalive")
            elif len(data) == len(PROBE_MAGIC) + 8 and data.startswith(PROBE_MAGIC):
                self.host.count("natt_steering_probe")
            else:
                self.host.count("natt_non_ike")
            return
        msg = data[4:] if natt else data
        if len(msg) < 28:
            self.host.count("short_datagrams")
            return
        spi_i, spi_r, exchange, flags = msg[:8], msg[8:16], msg[18], msg[19]
        from_initiator = bool(flags & 0x08)
        entry = self.ike_sas.get(spi_r if from_initiator else spi_i)
        if entry is None and from_initiator and spi_r == bytes(8) and not flags & 0x20 \
                and exchange == ExchangeType.IKE_SA_INIT:
            entry = self._responder_for(data, spi_i, local_ip, port, remote)
            if entry is None:
                return          # counted once, by the reason it was refused for
        if entry is None:
            self.host.count("unknown_spi")
            return
        entry.ike.receive_datagram(data, port, remote, self.host.now())
        self.host.process(entry)

    def _responder_for(self, data: bytes, spi_i: bytes, local_ip: str, port: int,
                       remote: Address) -> IkeEntry | None:
        known = self.gate.known(spi_i, remote)
        if known is not None and known in self.ike_sas:
            return self.ike_sas.get(known)
        conn = next((c for c in self.config.connections.values()
                     if (local_ip in c.local_addrs or c.any_local)
                     and (remote[0] in c.remote_addrs or "%any" in c.remote_addrs)), None)
        if conn is None:
            self.host.count("no_connection")
            log.info("IKE_SA_INIT from %s to %s: no connection configured for this peer, ignored", remote[0],
                     local_ip, extra={"peer": remote[0]})
            return None
        admission = self.gate.admit(data, port, remote, self.host.now())
        if admission.reply is not None:
            self.host.send(local_ip, admission.reply)
        if admission.refused is not None:
            self.host.count(admission.refused)
        if not admission.let_in:
            return None
        ike = IkeSA(conn.ike_config(self.config.gateway, local_ip=local_ip, addresses=self.addresses),
                    initiator=False, local=(local_ip, port), remote=remote)
        entry = self.ike_sas.add(conn, ike, local_ip, self.host.now())
        self.gate.opened(spi_i, remote, entry.spi, verified=admission.verified)
        return entry
