"""What one IKEv1 connection is configured with (the YAML loader will build these with ``version: 1``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from control.ike.certs import Credentials
from control.ike.config import Identity
from control.ike.ts_payload import TrafficSelectorEntry
from control.ikev1.auth_sig import auth_method
from control.ikev1.constants import AuthMethod
from control.ikev1.proposals import esp_transforms, ike_transforms


@dataclass
class Ikev1Config:
    local_id: Identity
    psk: bytes
    remote_id: Identity | None = None           # None: any identity the PSK authenticates
    ike_proposals: str = "aes256-sha256-modp2048"
    esp_proposals: str = "aes128-sha256"        # a DH keyword (aes128-sha256-modp2048) asks for PFS
    local_ts: list[TrafficSelectorEntry] = field(default_factory=list)
    remote_ts: list[TrafficSelectorEntry] = field(default_factory=list)
    child_name: str = "net"
    aggressive: bool = False                    # aggressive mode: 3 messages, identities in the clear
    ike_lifetime: int = 10800                   # seconds, proposed in the phase 1 transforms
    esp_lifetime: int = 3600
    local_port: int = 500
    local_natt_port: int = 4500
    remote_natt_port: int = 4500
    retransmit_timeout: float = 2.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 4
    half_open_timeout: float = 30.0             # a phase 1 not completed by then is dropped (both roles)
    # "psk", or "pubkey": signatures in main mode (RSA, RFC 2409 §5.1; ECDSA, RFC 4754) with the method our
    # key gives (the peer's key must be of the same kind: IKEv1 negotiates one method), our certificate and
    # key in credentials, the peer's certificate checked against cacerts
    auth: str = "psk"
    credentials: Credentials | None = None
    cacerts: list[x509.Certificate] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.auth == "psk":
            if not self.psk:
                raise ValueError("psk: expected a non-empty secret")
            method = AuthMethod.PSK
        elif self.auth == "pubkey":
            if self.credentials is None:
                raise ValueError("credentials: signature authentication needs our certificate and key")
            method = auth_method(self.credentials.key)
            if not self.cacerts:
                raise ValueError("cacerts: signature authentication needs at least one CA certificate")
            if self.aggressive:
                raise ValueError("aggressive: signature authentication is in main mode only (so far)")
        else:
            raise ValueError(f"auth: expected psk or pubkey, got {self.auth!r}")
        # parse now, so a bad proposal string fails at configuration time with the keyword named
        self.p1_transforms = ike_transforms(self.ike_proposals, method, self.ike_lifetime)
        esp_transforms(self.esp_proposals, self.esp_lifetime)

    def __repr__(self) -> str:          # the PSK never reaches a log
        return f"Ikev1Config(local_id={self.local_id}, remote_id={self.remote_id}, proposals={self.ike_proposals!r})"
