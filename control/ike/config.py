"""What one IKE connection is configured with (the YAML loader will build these)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from control.ike.constants import IdType
from control.ike.message import IDPayload, TrafficSelectorEntry
from control.ike.proposals import parse_proposals
from fastpath.sa import Mode


@dataclass(frozen=True)
class Identity:
    id_type: int
    data: bytes

    @classmethod
    def from_string(cls, text: str) -> Identity:
        """strongSwan's spelling: an IP address, ``user@host`` (RFC 822), ``@fqdn`` or ``fqdn``."""
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return cls(IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR, addr.packed)
        if "=" in text:
            raise ValueError(f"identity {text!r}: distinguished names are not supported yet")
        if text.startswith("@"):
            return cls(IdType.FQDN, text[1:].encode())
        if "@" in text:
            return cls(IdType.RFC822_ADDR, text.encode())
        return cls(IdType.FQDN, text.encode())

    def payload(self, initiator: bool) -> IDPayload:
        return IDPayload(self.id_type, self.data, initiator)

    def __str__(self) -> str:
        if self.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode(errors="replace")
        return f"id-type-{self.id_type}:{self.data.hex()}"


@dataclass
class ChildConfig:
    name: str
    local_ts: list[TrafficSelectorEntry]
    remote_ts: list[TrafficSelectorEntry]
    esp_proposals: str = "aes128gcm16"
    mode: Mode = Mode.TUNNEL
    rekey_time: float = 0.0         # seconds after creation to rekey (0: never), like swanctl's rekey_time
    rand_time: float = 0.0          # up to this much earlier, at random, so both ends rarely collide

    def __post_init__(self) -> None:
        self.proposals = parse_proposals(self.esp_proposals, "esp")


@dataclass
class IkeConfig:
    local_id: Identity
    psk: bytes
    remote_id: Identity | None = None           # None: any identity the PSK authenticates
    ike_proposals: str = "aes128gcm16-prfsha256-x25519"
    children: list[ChildConfig] = field(default_factory=list)
    local_port: int = 500
    local_natt_port: int = 4500
    remote_port: int = 500
    remote_natt_port: int = 4500
    encap: bool = False             # fake a NAT (like strongSwan's encap=yes) so ESP goes in UDP
    retransmit_timeout: float = 2.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 4
    dpd_delay: float = 0.0          # liveness check after this long without hearing from the peer (0: off)
    rekey_time: float = 0.0         # IKE SA rekey after this long (0: never)
    rand_time: float = 0.0
    half_open_timeout: float = 30.0  # a responder SA that never completes IKE_AUTH is dropped after this

    def __post_init__(self) -> None:
        self.proposals = parse_proposals(self.ike_proposals, "ike")
        if len(self.psk) < 1:
            raise ValueError("psk: expected a non-empty secret")

    def __repr__(self) -> str:          # the PSK never reaches a log
        return f"IkeConfig(local_id={self.local_id}, remote_id={self.remote_id}, proposals={self.ike_proposals!r})"
