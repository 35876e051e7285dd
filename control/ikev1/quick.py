"""Quick mode (RFC 2409 §5.5): the ESP SA pair under an ISAKMP SA, with PFS when the ESP proposals name a
DH group, client IDs as traffic selectors, and KEYMAT into the same ``ChildSaEstablished`` (two
``cdefs.sa.SA``) that IKEv2's CHILD SAs leave the core as.

HASH(1) = prf(SKEYID_a, M-ID | payloads after it), HASH(2) = prf(SKEYID_a, M-ID | Ni_b | payloads after
it), HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b).  A mixin of ``Ikev1SA`` (control.ikev1.sa).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cdefs.sa import SA, Mode
from control.ike.crypto import KeyExchange
from control.ike.events import ChildSaEstablished
from control.ike.ts import covered, to_fastpath
from control.ike.ts_payload import TrafficSelectorEntry
from control.ikev1.codec import (
    DecodeError,
    Header,
    IDPayload,
    Payload,
    Proposal,
    Refused,
    SAPayload,
    Transform,
    encode_payloads,
)
from control.ikev1.constants import Exchange, P2Attr, PayloadType, Protocol
from control.ikev1.events import QuickModeFailed
from control.ikev1.keys import exchange_iv, keymat
from control.ikev1.proposals import EspChoice, choose_esp, esp_choice, esp_transforms
from control.ikev1.ts_ids import host_ts, id_to_ts, ts_to_id

_NONCE_LEN = 32


@dataclass
class QuickState:
    message_id: int
    initiator: bool
    spi_in: bytes
    iv: bytes                           # CBC state of this exchange
    nonce_i: bytes = b""
    nonce_r: bytes = b""
    ke: KeyExchange | None = None
    offered: list[Transform] = field(default_factory=list)
    ids: list[IDPayload] = field(default_factory=list)
    choice: EspChoice | None = None
    spi_out: bytes = b""
    g_qm: bytes = b""
    local_ts: list[TrafficSelectorEntry] = field(default_factory=list)
    remote_ts: list[TrafficSelectorEntry] = field(default_factory=list)
    rekey_of: int | None = None         # inbound SPI of the pair this quick mode replaces

    def __repr__(self) -> str:
        return f"QuickState(mid=0x{self.message_id:08x}, spi_in={self.spi_in.hex()})"


def _spi() -> bytes:
    while True:
        spi = os.urandom(4)
        if int.from_bytes(spi, "big") >= 256:      # 1-255 are reserved (RFC 4303 §2.1)
            return spi


class QuickMode:
    """Quick mode, both roles."""

    def _esp_offer(self) -> list[Transform]:
        return esp_transforms(self.config.esp_proposals, self.config.esp_lifetime, udp=self.use_natt)

    def start_quick(self, now: float) -> int:
        """Start a quick mode for the configured child; returns its message ID."""
        if not self.established:
            raise RuntimeError("quick mode needs an established ISAKMP SA")
        cfg = self.config
        mid = int.from_bytes(os.urandom(4), "big") | 1
        while mid in self.quick:
            mid = int.from_bytes(os.urandom(4), "big") | 1
        offered = self._esp_offer()
        group = next((t.attr(P2Attr.GROUP) for t in offered if t.attr(P2Attr.GROUP)), 0)
        if group:
            offered = [t for t in offered if t.attr(P2Attr.GROUP) == group]
        qs = QuickState(mid, True, _spi(), exchange_iv(self.suite, self.last_p1_block, mid), os.urandom(_NONCE_LEN),
                        offered=offered, ke=KeyExchange(group) if group else None)
        qs.local_ts = list(cfg.local_ts) or [host_ts(self.local[0])]
        qs.remote_ts = list(cfg.remote_ts) or [host_ts(self.remote[0])]
        payloads = [SAPayload([Proposal(1, Protocol.ESP, qs.spi_in, offered)]),
                    Payload(PayloadType.NONCE, qs.nonce_i)]
        if qs.ke is not None:
            payloads.append(Payload(PayloadType.KE, qs.ke.public))
        if cfg.local_ts or cfg.remote_ts:
            qs.ids = [ts_to_id(qs.local_ts[0]), ts_to_id(qs.remote_ts[0])]
            payloads += qs.ids
        _, body = encode_payloads(payloads)
        msg, qs.iv = self._seal(Exchange.QUICK, mid, [self._hash_payload(mid.to_bytes(4, "big") + body), *payloads],
                                qs.iv)
        self.quick[mid] = qs
        self._send(msg)
        self._arm(msg, now, f"quick:{mid}")
        return mid

    def rekey_child(self, spi_in: int, now: float) -> int:
        """Replace the quick mode SA pair whose inbound SPI is spi_in, make before break: a new quick mode,
        its ``ChildSaEstablished`` with ``rekey_of`` = spi_in, then the Delete of the old pair."""
        if not any(c.inbound.spi == spi_in for c in self.children):
            raise KeyError(f"no quick mode SA with inbound SPI 0x{spi_in:08x}")
        mid = self.start_quick(now)
        self.quick[mid].rekey_of = spi_in
        return mid

    def _quick(self, hdr: Header, data: bytes, now: float) -> list[bytes] | None:
        if not self.established:
            raise Refused("quick mode before phase 1 completed")
        mid = hdr.message_id
        if mid == 0:
            raise DecodeError("quick mode with message ID 0")
        qs = self.quick.get(mid)
        if qs is None:
            if mid in self._quick_done:
                raise Refused("quick mode message for a finished exchange (replayed)")
            return self._r_qm1(hdr, data, mid)
        payloads, iv_after = self._open(hdr, data, qs.iv)
        if qs.initiator:
            return self._i_qm2(qs, payloads, iv_after)
        return self._r_qm3(qs, payloads)

    def _r_qm1(self, hdr: Header, data: bytes, mid: int) -> list[bytes]:
        cfg = self.config
        payloads, iv_after = self._open(hdr, data, exchange_iv(self.suite, self.last_p1_block, mid))
        self._check_hash(payloads[0] if payloads else None,
                         mid.to_bytes(4, "big") + b"".join(p.raw for p in payloads[1:]), "quick mode message 1")
        rest = payloads[1:]
        sas = [p for p in rest if p.type == PayloadType.SA]
        nis = [p for p in rest if p.type == PayloadType.NONCE]
        kes = [p for p in rest if p.type == PayloadType.KE]
        ids = [p for p in rest if p.type == PayloadType.ID]
        if len(sas) != 1 or len(nis) != 1 or len(kes) > 1 or len(ids) not in (0, 2):
            raise Refused("quick mode message 1 needs one SA, one nonce, at most one KE and zero or two IDs")
        ours = self._esp_offer()
        chosen, prop = None, None
        for p in sas[0].proposals:
            if p.protocol == Protocol.ESP and len(p.spi) == 4 and int.from_bytes(p.spi, "big") >= 256:
                chosen = choose_esp(ours, p.transforms)
                if chosen is not None:
                    prop = p
                    break
        if chosen is None:
            raise Refused("no acceptable ESP proposal in quick mode")
        choice = esp_choice(chosen)
        if bool(choice.pfs_group) != bool(kes):
            raise Refused("PFS group and KE payload disagree")
        if ids:
            tsi, tsr = id_to_ts(ids[0]), id_to_ts(ids[1])
        else:
            tsi, tsr = host_ts(self.remote[0]), host_ts(self.local[0])
        if not covered(tsi, cfg.remote_ts or [host_ts(self.remote[0])]) or \
                not covered(tsr, cfg.local_ts or [host_ts(self.local[0])]):
            raise Refused("quick mode client IDs are outside the configured traffic selectors")
        ke = KeyExchange(choice.pfs_group) if choice.pfs_group else None
        g_qm = ke.shared(kes[0].data) if ke is not None else b""
        qs = QuickState(mid, False, _spi(), b"", nis[0].data, os.urandom(_NONCE_LEN), ke, choice=choice,
                        spi_out=prop.spi, g_qm=g_qm, local_ts=[tsr], remote_ts=[tsi])
        qs.ids = [IDPayload(i.id_type, i.data, i.protocol, i.port) for i in ids]
        reply = [SAPayload([Proposal(prop.num, Protocol.ESP, qs.spi_in, [chosen])]),
                 Payload(PayloadType.NONCE, qs.nonce_r)]
        if ke is not None:
            reply.append(Payload(PayloadType.KE, ke.public))
        reply += qs.ids
        _, body = encode_payloads(reply)
        msg, qs.iv = self._seal(Exchange.QUICK, mid, [self._hash_payload(mid.to_bytes(4, "big") + qs.nonce_i + body),
                                                      *reply], iv_after)
        self.quick[mid] = qs
        return [msg]

    def _i_qm2(self, qs: QuickState, payloads: list, iv_after: bytes) -> list[bytes]:
        mid = qs.message_id
        self._check_hash(payloads[0] if payloads else None,
                         mid.to_bytes(4, "big") + qs.nonce_i + b"".join(p.raw for p in payloads[1:]),
                         "quick mode message 2")
        rest = payloads[1:]
        sas = [p for p in rest if p.type == PayloadType.SA]
        nrs = [p for p in rest if p.type == PayloadType.NONCE]
        kes = [p for p in rest if p.type == PayloadType.KE]
        ids = [p for p in rest if p.type == PayloadType.ID]
        if len(sas) != 1 or len(nrs) != 1 or len(kes) > 1:
            raise Refused("quick mode message 2 needs one SA, one nonce and at most one KE")
        props = sas[0].proposals
        if len(props) != 1 or len(props[0].transforms) != 1 or props[0].protocol != Protocol.ESP \
                or len(props[0].spi) != 4:
            raise Refused("quick mode reply must choose one ESP transform")
        t = props[0].transforms[0]
        if choose_esp(qs.offered, [t]) is None:
            raise Refused("responder chose an ESP transform we did not offer")
        choice = esp_choice(t)
        if (qs.ke is not None) != bool(kes) or (qs.ke is not None and choice.pfs_group != qs.ke.group):
            raise Refused("PFS: responder's KE does not fit what we offered")
        if qs.ids and [i.body() for i in ids] != [i.body() for i in qs.ids]:
            raise Refused("responder changed the quick mode client IDs")
        g_qm = qs.ke.shared(kes[0].data) if qs.ke is not None else b""
        qs.nonce_r, qs.choice, qs.spi_out, qs.g_qm = nrs[0].data, choice, props[0].spi, g_qm
        h3 = self.suite.prf(self.keys.skeyid_a, b"\x00" + mid.to_bytes(4, "big") + qs.nonce_i + qs.nonce_r)
        msg, _ = self._seal(Exchange.QUICK, mid, [Payload(PayloadType.HASH, h3)], iv_after)
        if self._retx is not None and self._retx[3] == f"quick:{mid}":
            self._retx = None
        self._install(qs)
        return [msg]

    def _r_qm3(self, qs: QuickState, payloads: list) -> list[bytes]:
        mid = qs.message_id
        if len(payloads) != 1:
            raise Refused("quick mode message 3 carries only HASH(3)")
        self._check_hash(payloads[0], b"\x00" + mid.to_bytes(4, "big") + qs.nonce_i + qs.nonce_r,
                         "quick mode message 3")
        self._install(qs)
        return []

    def _install(self, qs: QuickState) -> None:
        """KEYMAT for each direction (the receiver's SPI in it) into the inbound and outbound SAs."""
        s = qs.choice.suite
        size = s.enc_key_len + s.integ_key_len
        km_in = keymat(self.suite, self.keys.skeyid_d, Protocol.ESP, qs.spi_in, qs.nonce_i, qs.nonce_r, size, qs.g_qm)
        km_out = keymat(self.suite, self.keys.skeyid_d, Protocol.ESP, qs.spi_out, qs.nonce_i, qs.nonce_r, size,
                        qs.g_qm)
        local, remote = self.local_ip, self.local_ip.__class__(self.remote[0])
        ours = self.config.local_natt_port if self.use_natt else self.config.local_port
        theirs = self.remote[1]
        common = dict(enc=s.enc, integ=s.integ, mode=Mode.TUNNEL, esn=False, udp_encap=self.use_natt,
                      local_ts=[to_fastpath(t) for t in qs.local_ts], remote_ts=[to_fastpath(t) for t in qs.remote_ts])
        inbound = SA(spi=int.from_bytes(qs.spi_in, "big"), src=remote, dst=local, enc_key=km_in[:s.enc_key_len],
                     integ_key=km_in[s.enc_key_len:], sport=theirs, dport=ours, **common)
        outbound = SA(spi=int.from_bytes(qs.spi_out, "big"), src=local, dst=remote, enc_key=km_out[:s.enc_key_len],
                      integ_key=km_out[s.enc_key_len:], sport=ours, dport=theirs, **common)
        ev = ChildSaEstablished(self.config.child_name, inbound, outbound, s, qs.local_ts, qs.remote_ts,
                                rekey_of=qs.rekey_of, initiator=qs.initiator)
        if qs.rekey_of is not None:
            old = qs.rekey_of
            self._after.append(lambda now: self.delete_child(old, "rekeyed"))
        del self.quick[qs.message_id]
        self._quick_done.add(qs.message_id)
        self.children.append(ev)
        self._events.append(ev)

    def _quick_failed(self, reason: str) -> None:
        self._events.append(QuickModeFailed(self.config.child_name, reason))
