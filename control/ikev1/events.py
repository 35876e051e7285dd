"""What the IKEv1 core tells its caller, beside the events it shares with IKEv2 (``Datagram``,
``ChildSaEstablished``, ``ChildSaDeleted`` from control.ike.events: the daemon installs a quick mode SA
pair exactly as it installs a CHILD SA)."""

from __future__ import annotations

from dataclasses import dataclass

from control.ike.config import Identity
from control.ike.events import Address, ChildSaDeleted, ChildSaEstablished, Datagram
from control.ikev1.keys import P1Suite

__all__ = ["Address", "ChildSaDeleted", "ChildSaEstablished", "Datagram", "IsakmpSaDeleted",
           "IsakmpSaEstablished", "IsakmpSaFailed", "QuickModeFailed", "DpdAck"]


@dataclass
class IsakmpSaEstablished:
    cookie_i: bytes
    cookie_r: bytes
    initiator: bool
    aggressive: bool
    suite: P1Suite
    remote_id: Identity
    remote: Address
    nat_local: bool
    nat_remote: bool


@dataclass
class IsakmpSaFailed:
    reason: str


@dataclass
class IsakmpSaDeleted:
    cookie_i: bytes
    cookie_r: bytes
    reason: str


@dataclass
class QuickModeFailed:
    name: str
    reason: str


@dataclass
class DpdAck:
    """The peer answered our R-U-THERE (RFC 3706) with this sequence number."""

    sequence: int
