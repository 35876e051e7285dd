"""What the IKE core tells its caller, and the state both the IKE SA and its tasks share.

Everything here is plain data: the events an ``IkeSA`` yields from ``next_event()`` (dataclasses the
daemon dispatches by type), the outgoing ``Datagram``, the IKE and CHILD SA states, ``ChildState`` (what
an IKE SA remembers of each CHILD SA) and ``IkeError``, the one error a task raises to refuse a message.
Tasks and the IKE SA both import this module; it imports neither, so there is no circle between them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cdefs.sa import SA
from control.ike.config import ChildConfig, Identity
from control.ike.cp import IPAddress
from control.ike.crypto import IkeSuite
from control.ike.proposals import EspSuite
from control.ike.ts_payload import TrafficSelectorEntry

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

Address = tuple[str, int]


@dataclass
class Datagram:
    data: bytes                 # UDP payload, marker included on the NAT-T port
    local_port: int             # which of our sockets sends it
    remote: Address


@dataclass
class IkeSaEstablished:
    spi_i: bytes
    spi_r: bytes
    initiator: bool
    suite: IkeSuite
    local_id: Identity
    remote_id: Identity
    remote: Address
    nat_local: bool
    nat_remote: bool
    # virtual IPs (RFC 7296 §3.15): the ones we leased the peer as responder, got as initiator
    vips: tuple[IPAddress, ...] = ()


@dataclass
class ChildSaEstablished:
    """A CHILD SA pair: install ``inbound`` and ``outbound`` (fastpath SAs) in the data plane."""

    name: str
    inbound: SA
    outbound: SA
    suite: EspSuite
    local_ts: list[TrafficSelectorEntry]
    remote_ts: list[TrafficSelectorEntry]
    rekey_of: int | None = None     # inbound SPI of the CHILD SA this one replaces (a rekey)
    initiator: bool = True          # we initiated the exchange that made it (a rekey's responder waits for the
                                    # initiator's Delete of the old pair before sending on the new one)
    redundant: bool = False         # the loser of a rekey collision (RFC 7296 2.8.1): we delete it right away

    def __repr__(self) -> str:          # SAs carry keys
        extra = f", rekey_of=0x{self.rekey_of:08x}" if self.rekey_of is not None else ""
        return (f"ChildSaEstablished({self.name!r}, in=0x{self.inbound.spi:08x}, out=0x{self.outbound.spi:08x}, "
                f"{'AH ' + str(self.suite.integ) if self.suite.proto == 'ah' else self.suite.enc}{extra})")


@dataclass
class ChildSaDeleted:
    """Remove both SAs of a CHILD SA from the data plane (after a rekey: the replaced pair)."""

    name: str
    spi_in: int
    spi_out: int
    reason: str


@dataclass
class IkeSaRekeyed:
    """This IKE SA was replaced by ``new_sa``: route datagrams for ``new_sa.our_spi`` to it from now on.

    The CHILD SAs moved to ``new_sa``.  With ``redundant`` (a simultaneous rekey, RFC 7296 §2.8.1) the
    new SA is the losing duplicate: route to it only until it is deleted; the children are not on it."""

    old_spi_i: bytes
    old_spi_r: bytes
    new_sa: IkeSA
    redundant: bool = False

    def __repr__(self) -> str:
        return (f"IkeSaRekeyed({self.old_spi_i.hex()}_{self.old_spi_r.hex()} -> "
                f"{self.new_sa.spi_i.hex()}_{self.new_sa.spi_r.hex()}{', redundant' if self.redundant else ''})")


@dataclass
class IkeSaDeleted:
    """The IKE SA is gone after a Delete (ours or the peer's); ``rekeyed`` when it was replaced."""

    spi_i: bytes
    spi_r: bytes
    reason: str
    rekeyed: bool = False


@dataclass
class IkeSaReauthStarted:
    """Reauthentication (RFC 7296 §2.8.3), make before break: ``new_sa`` is a fresh IKE SA (IKE_SA_INIT,
    IKE_AUTH) to the same peer that re-creates this SA's CHILD SAs.  Route ``new_sa.our_spi`` to it and
    drive it like any IKE SA; its ``ChildSaEstablished`` events carry ``rekey_of`` = the old pair.  The
    CHILD SAs stay here until then, and this SA is deleted once ``new_sa`` is up (``IkeSaReauthenticated``)."""

    old_spi_i: bytes
    old_spi_r: bytes
    new_sa: IkeSA

    def __repr__(self) -> str:
        return f"IkeSaReauthStarted({self.old_spi_i.hex()}_{self.old_spi_r.hex()} -> {self.new_sa.spi_i.hex()})"


@dataclass
class IkeSaReauthenticated:
    """Emitted by the new IKE SA of a reauthentication once its CHILD SAs are set up: ``old_sa`` (the
    replaced IKE SA) has queued its Delete, so the caller must send what ``old_sa`` has queued."""

    old_sa: IkeSA

    def __repr__(self) -> str:
        return f"IkeSaReauthenticated(old {self.old_sa.spi_i.hex()}_{self.old_sa.spi_r.hex()})"


@dataclass
class ChildSaFailed:
    name: str
    notify: int
    reason: str
    detail: tuple[str, ...] = ()    # control.ike.explain's lines: what did not match, or what we offered
    received: bool = False          # the peer sent the notify (else we refused)


@dataclass
class IkeSaFailed:
    notify: int                 # the error notify that ended it (0 when none applies)
    reason: str
    detail: tuple[str, ...] = ()
    received: bool = False


class State(enum.Enum):
    CREATED = "created"
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    REKEYED = "rekeyed"         # replaced by a new IKE SA; waits for (or sends) the Delete
    DELETING = "deleting"       # our Delete is outstanding
    DEAD = "dead"


class ChildStatus(enum.Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"       # our rekey is outstanding
    REKEYED = "rekeyed"         # replaced; the old pair stays for inbound traffic until deleted
    DELETING = "deleting"       # our Delete is outstanding


class IkeError(Exception):
    """A task refuses a message; ``notify`` is the error to report (and to send, as a responder).

    ``detail`` explains it (control.ike.explain); ``received`` when the peer sent the notify to us."""

    def __init__(self, notify: int, reason: str, data: bytes = b"", *, detail: list[str] | tuple[str, ...] = (),
                 received: bool = False):
        super().__init__(reason)
        self.notify = notify
        self.data = data
        self.detail = tuple(detail)
        self.received = received


@dataclass
class ChildState:
    """What the SA remembers of a CHILD SA it negotiated."""

    config: ChildConfig
    spi_in: int
    spi_out: int = 0
    suite: EspSuite | None = None
    local_ts: list[TrafficSelectorEntry] = field(default_factory=list)
    remote_ts: list[TrafficSelectorEntry] = field(default_factory=list)
    status: ChildStatus = ChildStatus.INSTALLED
    rekey_at: float | None = None   # when to rekey (set by the manager from the config)
    scheduled: bool = False
    # a peer's rekey of this SA that crossed ours (RFC 7296 §2.8.1): (Ni, Nr, the new ChildState)
    collision: tuple[bytes, bytes, ChildState] | None = None
