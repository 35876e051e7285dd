"""What one IKE connection is configured with (the YAML loader will build these)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from cryptography import x509

from cdefs.sa import Mode
from control.ike.certs import Credentials, dn_from_string, dn_to_string
from control.ike.constants import IdType, ProtocolId
from control.ike.cp import AddressProvider
from control.ike.payloads import IDPayload
from control.ike.proposals import parse_proposals
from control.ike.ts_payload import TrafficSelectorEntry


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
            return cls(IdType.DER_ASN1_DN, dn_from_string(text))
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
        if self.id_type == IdType.DER_ASN1_DN:
            return dn_to_string(self.data)
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
    # AH instead of ESP (RFC 4302): when set, the child negotiates protocol ID AH with these proposals and
    # esp_proposals is not used (the YAML loader refuses a child that names both)
    ah_proposals: str = ""
    # remote_ts: [dynamic] (swanctl): the responder narrows the initiator's selectors to the virtual IP it
    # leased in this IKE_AUTH, or to the peer's IKE address when it leased none
    remote_dynamic: bool = False

    def __post_init__(self) -> None:
        self.protocol = ProtocolId.AH if self.ah_proposals else ProtocolId.ESP
        self.proposals = parse_proposals(self.ah_proposals, "ah") if self.ah_proposals else \
            parse_proposals(self.esp_proposals, "esp")

    @property
    def is_ah(self) -> bool:
        return self.protocol == ProtocolId.AH


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
    # reauthentication (RFC 7296 §2.8.3): a new IKE SA with a fresh IKE_AUTH replaces this one (0: never);
    # rand_time above is its jitter too.  An IKE SA not replaced within over_time after its rekey or
    # reauth time is deleted (swanctl's over_time; 0: 10 % of the larger of rekey_time and reauth_time)
    reauth_time: float = 0.0
    over_time: float = 0.0
    keep_alive: float = 20.0        # NAT-T keepalive interval when we are behind a NAT (RFC 3948 §2.3; 0: off)
    window_size: int = 1            # Message ID window we advertise and use (RFC 7296 §2.3, SET_WINDOW_SIZE)
    # certificate authentication (RFC 7427); each direction may differ, as in swanctl's local/remote auth
    local_auth: str = "psk"                     # "psk" or "pubkey" (we sign with credentials)
    remote_auth: str = "psk"                    # "psk" or "pubkey" (the peer's cert must chain to cacerts)
    credentials: Credentials | None = None      # our certificate and private key
    cacerts: list[x509.Certificate] = field(default_factory=list)
    rsa_pss: bool = False                       # sign with RSASSA-PSS instead of PKCS#1 v1.5 (RSA keys)
    # RFC 7383 fragmentation, as swanctl's fragmentation: yes (announce, send and accept), accept (announce,
    # never send), force (IKEv2: as yes), no (do not announce); a peer's fragments are always accepted.
    # fragment_size: the whole IP datagram of a fragment, as charon.fragment_size (0: 576 IPv4, 1280 IPv6)
    fragmentation: str = "yes"
    fragment_size: int = 1280
    # remote access (RFC 7296 §3.15, docs/remote-access.md): as responder, the pools a CFG_REQUEST is
    # answered from, through ``addresses`` (the daemon's leases: the core asks, never decides); as
    # initiator, the IP versions (4, 6) of the virtual addresses we ask for (swanctl's vips)
    pools: tuple[str, ...] = ()
    addresses: AddressProvider | None = None
    vips: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.proposals = parse_proposals(self.ike_proposals, "ike")
        if any(v not in (4, 6) for v in self.vips):
            raise ValueError(f"vips: expected IP versions 4 or 6, got {self.vips}")
        for what, auth in (("local_auth", self.local_auth), ("remote_auth", self.remote_auth)):
            if auth not in ("psk", "pubkey"):
                raise ValueError(f"{what}: expected psk or pubkey, got {auth!r}")
        if "psk" in (self.local_auth, self.remote_auth) and len(self.psk) < 1:
            raise ValueError("psk: expected a non-empty secret")
        if self.local_auth == "pubkey" and self.credentials is None:
            raise ValueError("credentials: pubkey authentication needs our certificate and key")
        if self.fragmentation not in ("yes", "accept", "force", "no"):
            raise ValueError(f"fragmentation: expected yes, accept, force or no, got {self.fragmentation!r}")
        if self.fragment_size != 0 and not 280 <= self.fragment_size <= 65535:
            raise ValueError(f"fragment_size: expected 0 or 280 to 65535 bytes, got {self.fragment_size}")
        if self.window_size < 1:
            raise ValueError(f"window_size: expected at least 1, got {self.window_size}")
        if self.remote_auth == "pubkey" and not self.cacerts:
            raise ValueError("cacerts: pubkey authentication of the peer needs at least one CA certificate")

    @property
    def hard_over_time(self) -> float:
        """How long past its rekey/reauth time an IKE SA may live unreplaced (swanctl's over_time)."""
        if self.over_time > 0:
            return self.over_time
        return 0.1 * max(self.rekey_time, self.reauth_time)

    @property
    def uses_certs(self) -> bool:
        return "pubkey" in (self.local_auth, self.remote_auth)

    def __repr__(self) -> str:          # the PSK never reaches a log
        return f"IkeConfig(local_id={self.local_id}, remote_id={self.remote_id}, proposals={self.ike_proposals!r})"
