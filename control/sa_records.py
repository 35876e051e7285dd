"""What the daemon keeps per IKE SA and per CHILD SA beside the IKE core's own state: the
connection it belongs to, where its SAs sit in shared memory, and the daemon's own timers."""

from __future__ import annotations

from dataclasses import dataclass, field

from cdefs.sa import SA
from control.config import ChildSpec, ConnectionConfig
from control.ike.events import IkeSaEstablished
from control.ike.message import TrafficSelectorEntry
from control.ike.sa import IkeSA

__all__ = ["ChildEntry", "IkeEntry", "INSTALLED", "REKEYING", "REKEYED"]

INSTALLED, REKEYING, REKEYED = "INSTALLED", "REKEYING", "REKEYED"   # ChildEntry.state


@dataclass(eq=False)            # identity: two records are never "the same" SA
class ChildEntry:
    conn: str
    name: str
    ike_spi: bytes
    spi_in: int
    spi_out: int
    slot_in: int
    slot_out: int
    id_in: int
    id_out: int
    proposal: str
    mode: str
    encap: bool
    local_ts: list[TrafficSelectorEntry]
    remote_ts: list[TrafficSelectorEntry]
    installed_wall: float
    installed: float
    rekey_at: float | None
    expire_at: float | None
    state: str = INSTALLED              # INSTALLED | REKEYING | REKEYED (outbound replaced, inbound kept)
    remove_at: float | None = None      # REKEYED: inbound slot removal time
    # a rekey's responder keeps sending on the older instances until the initiator deletes them: until then
    # they are listed here and the SPD still points at their outbound slot
    waits_for: list[ChildEntry] = field(default_factory=list, repr=False)
    switch_at: float | None = None      # ... and sends on this one at the latest then
    expects_delete: bool = False        # ... waiting for a rekey initiator's Delete (not a short settle)
    keys: tuple[SA, SA] | None = field(default=None, repr=False)   # only with gateway.export_keys
    # a road warrior's identity (remote_ts: dynamic): each client's instance of the child is its own, with
    # its own policies; "" for a site's child, whose instances replace one another
    peer: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """What its policies are filed under in the SPD, and which instances hand over to each other."""
        return (self.conn, f"{self.name}@{self.peer}" if self.peer else self.name)


@dataclass(eq=False)
class IkeEntry:
    conn: ConnectionConfig
    ike: IkeSA
    created: float
    local_ip: str
    established: IkeSaEstablished | None = None
    established_wall: float = 0.0
    rekey_at: float | None = None
    dpd_at: float | None = None
    pending: list[ChildSpec] = field(default_factory=list)     # children to create once up
    replaces: bytes | None = None                               # IKE SA this one is replacing
    unique: int = 0

    @property
    def spi(self) -> bytes:
        return self.ike.our_spi

    @property
    def label(self) -> str:
        return f"{self.conn.name}[{self.unique}]"
