"""RFC 9242 IKE_INTERMEDIATE and RFC 9370 additional key exchanges with FIPS 203 ML-KEM.

The key schedule and IntAuth are recomputed here from the RFCs' formulas with the standard library's
HMAC (not control.ike.crypto's PRF), the IKE_INTERMEDIATE messages decrypted from the wire with
cryptography's AESGCM; the in-memory pair then shows both cores agreeing and their CHILD SAs carrying ESP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from support.ike_pair import Pair, assert_esp_works, configs, handshake

import control.ike.tasks.ike_intermediate as intermediate_task
from control.ike.constants import DhGroup, ExchangeType, Notify, PayloadType, TransformType
from control.ike.crypto import MLKEM_GROUPS, CryptoError, IkeSuite, KeyExchange, derive_addke_keys, derive_ike_keys
from control.ike.events import ChildSaEstablished, IkeSaFailed, State
from control.ike.explain import proposal_mismatch
from control.ike.proposals import ProposalError, ike_suite, parse_proposal, parse_proposals, select_proposal

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
TWO = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024-ke2_mlkem768"
_X43 = int(ExchangeType.IKE_INTERMEDIATE)


# -- ML-KEM (FIPS 203) --------------------------------------------------------------------------

@pytest.mark.parametrize("group, ek_len, ct_len", [(DhGroup.MLKEM768, 1184, 1088), (DhGroup.MLKEM1024, 1568, 1568)])
def test_mlkem_sizes_and_round_trip(group: int, ek_len: int, ct_len: int) -> None:
    # FIPS 203 table 3: encapsulation key and ciphertext sizes; the shared secret is 32 bytes
    initiator = KeyExchange(group)
    responder = KeyExchange(group, responder=True)
    assert len(initiator.public) == ek_len and responder.public == b""
    k_r = responder.shared(initiator.public)
    assert len(responder.public) == ct_len
    assert initiator.shared(responder.public) == k_r and len(k_r) == 32
    # a fresh encapsulation to the same key gives another secret
    again = KeyExchange(group, responder=True)
    assert again.shared(initiator.public) != k_r


def test_mlkem_bad_values_are_crypto_errors_and_forgery_gives_another_key() -> None:
    initiator = KeyExchange(DhGroup.MLKEM768)
    with pytest.raises(CryptoError, match="1184 bytes"):
        KeyExchange(DhGroup.MLKEM768, responder=True).shared(initiator.public[:-1])
    # FIPS 203 §7.2 modulus check: coefficients >= q (0xFFF) in the key are refused
    with pytest.raises(CryptoError, match="encapsulation key"):
        KeyExchange(DhGroup.MLKEM768, responder=True).shared(b"\xff" * 1152 + initiator.public[1152:])
    responder = KeyExchange(DhGroup.MLKEM768, responder=True)
    k = responder.shared(initiator.public)
    with pytest.raises(CryptoError, match="1088 bytes"):
        initiator.shared(responder.public + b"\0")
    forged = bytes([responder.public[0] ^ 1]) + responder.public[1:]
    assert initiator.shared(forged) != k      # implicit rejection: no error, a key nobody else has


def test_mlkem_key_from_seed_is_deterministic() -> None:
    seed = os.urandom(64)
    a, b = KeyExchange.from_private(DhGroup.MLKEM768, seed), KeyExchange.from_private(DhGroup.MLKEM768, seed)
    assert a.public == b.public
    assert KeyExchange.from_private(DhGroup.MLKEM768, os.urandom(64)).public != a.public


# -- proposals ----------------------------------------------------------------------------------

def _addke(text: str) -> list[tuple[int, int]]:
    return [(int(t.type), int(t.id)) for t in parse_proposal(text).transforms if t.type >= TransformType.ADDKE1]


def test_strongswan6_keywords() -> None:
    assert _addke(HYBRID) == [(6, 36)]
    assert _addke(TWO) == [(6, 37), (7, 36)]
    assert _addke(HYBRID + "-ke1_none") == [(6, 36), (6, 0)]
    assert _addke("aes256gcm16-prfsha384-x25519-ke3_mlkem1024") == [(8, 37)]
    pure = parse_proposal("aes256gcm16-prfsha384-mlkem768")
    assert [int(t.id) for t in pure.of_type(TransformType.DH)] == [36]


@pytest.mark.parametrize("text, protocol, words", [
    ("aes256gcm16-prfsha384-x25519-ke1_kyber", "ike", "ke1_kyber: unknown key exchange method"),
    ("aes256gcm16-prfsha384-x25519-ke8_mlkem768", "ike", "unknown or unsupported ike proposal keyword 'ke8_mlkem768'"),
    ("aes256gcm16-ke1_mlkem768", "esp", "IKE_FOLLOWUP_KE"),
    ("aes256gcm16-mlkem768", "esp", "ML-KEM for CHILD SA PFS"),
])
def test_bad_keywords_say_what_is_wrong(text: str, protocol: str, words: str) -> None:
    with pytest.raises(ProposalError, match=words):
        parse_proposals(text, protocol)


@pytest.mark.skipif(DhGroup.MLKEM512 in MLKEM_GROUPS, reason="this cryptography has ML-KEM-512")
def test_mlkem512_refused_when_cryptography_lacks_it() -> None:
    with pytest.raises(ProposalError, match="MLKEM512 is not available"):
        parse_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem512")


def test_selection_required_and_optional_additional_exchange() -> None:
    plain = parse_proposals("aes256gcm16-prfsha384-x25519")
    assert select_proposal(parse_proposals(HYBRID), plain) is None
    assert select_proposal(plain, parse_proposals(HYBRID)) is None     # the peer requires it: not silently dropped
    optional = parse_proposals(HYBRID + "-ke1_none")
    chosen = select_proposal(optional, plain)
    assert chosen is not None and ike_suite(chosen).addke == ()
    chosen = select_proposal(optional, parse_proposals(HYBRID))
    assert chosen is not None and ike_suite(chosen).addke == (DhGroup.MLKEM768,)
    # our order of preference decides within one additional exchange
    chosen = select_proposal(parse_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem1024-ke1_mlkem768"),
                             parse_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_mlkem1024"))
    assert chosen is not None and ike_suite(chosen).addke == (DhGroup.MLKEM1024,)


def test_mismatch_explained_naming_the_additional_exchange() -> None:
    lines = proposal_mismatch(parse_proposals(HYBRID), parse_proposals("aes256gcm16-prfsha384-x25519"), "IKE")
    text = "\n".join(lines)
    assert "our IKE proposals:   aes256gcm16-prfsha384-x25519-ke1_mlkem768" in text
    assert "additional key exchange 1 (ADDKE1): ours ke1_mlkem768, theirs none" in text
    assert "the peer offers no additional key exchange" in text and "ke1_none" in text


# -- the key schedule, recomputed from RFC 7296 §2.14 and RFC 9370 §2.2.2 ----------------------------

def _prf(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha384).digest()


def _prf_plus(key: bytes, seed: bytes, n: int) -> bytes:
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = _prf(key, t + seed + bytes([i]))
        out += t
        i += 1
    return out[:n]


def _sk(skeyseed: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes) -> list[bytes]:
    # AES-256-GCM and PRF-HMAC-SHA-384: SK_d 48, no SK_a, SK_e 32 + 4 salt, SK_p 48
    km = _prf_plus(skeyseed, ni + nr + spi_i + spi_r, 48 + 36 + 36 + 48 + 48)
    sizes, out, pos = (48, 36, 36, 48, 48), [], 0
    for n in sizes:
        out.append(km[pos:pos + n])
        pos += n
    return out          # SK_d, SK_ei, SK_er, SK_pi, SK_pr


def _ours(keys) -> list[bytes]:
    return [keys.sk_d, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr]


def test_key_schedule_matches_the_rfc_formulas() -> None:
    suite = IkeSuite(20, 256, 6, 0, 31, (36, 37))
    ni, nr, spi_i, spi_r = os.urandom(32), os.urandom(32), os.urandom(8), os.urandom(8)
    g_ir, sk1, sk2 = os.urandom(32), os.urandom(32), os.urandom(32)
    keys0 = derive_ike_keys(suite, ni, nr, g_ir, spi_i, spi_r)
    expect0 = _sk(_prf(ni + nr, g_ir), ni, nr, spi_i, spi_r)
    assert _ours(keys0) == expect0 and keys0.sk_ai == keys0.sk_ar == b""
    keys1 = derive_addke_keys(suite, keys0, ni, nr, sk1, spi_i, spi_r)
    # SKEYSEED(1) = prf(SK_d(0), SK(1) | Ni | Nr)
    expect1 = _sk(_prf(expect0[0], sk1 + ni + nr), ni, nr, spi_i, spi_r)
    assert _ours(keys1) == expect1
    keys2 = derive_addke_keys(suite, keys1, ni, nr, sk2, spi_i, spi_r)
    assert _ours(keys2) == _sk(_prf(expect1[0], sk2 + ni + nr), ni, nr, spi_i, spi_r)


# -- the in-memory pair -------------------------------------------------------------------------------

def _record(monkeypatch) -> list[tuple[object, bytes, object]]:
    """(keys before, the additional exchange's shared secret, keys after) of every update, either side."""
    seen: list[tuple[object, bytes, object]] = []
    real = intermediate_task.derive_addke_keys

    def spy(suite, keys, ni, nr, shared, spi_i, spi_r):
        new = real(suite, keys, ni, nr, shared, spi_i, spi_r)
        seen.append((keys, shared, new))
        return new
    monkeypatch.setattr(intermediate_task, "derive_addke_keys", spy)
    return seen


def _established(p: Pair) -> tuple[ChildSaEstablished, ChildSaEstablished]:
    assert p.i.state == p.r.state == State.ESTABLISHED, (p.of("a", IkeSaFailed), p.of("b", IkeSaFailed))
    (a,), (b,) = p.of("a", ChildSaEstablished), p.of("b", ChildSaEstablished)
    return a, b


def _intermediates(p: Pair) -> list[bytes]:
    return [w for w in p.wire if w[18] == _X43]


def test_x25519_mlkem768_pair(monkeypatch) -> None:
    seen = _record(monkeypatch)
    p = handshake(*configs(ike_i=HYBRID))
    a, b = _established(p)
    assert p.i.suite.addke == p.r.suite.addke == (DhGroup.MLKEM768,)
    assert p.i.addke_done == p.r.addke_done == 1 and p.i.addke_todo == p.r.addke_todo == []
    # one update per side, on the same secret, to keys that follow the RFC 9370 formula from the previous ones
    assert len(seen) == 2 and seen[0][1] == seen[1][1]
    for before, shared, after in seen:
        assert _ours(after) == _sk(_prf(before.sk_d, shared + p.i.nonce_i + p.i.nonce_r),
                                   p.i.nonce_i, p.i.nonce_r, p.i.spi_i, p.i.spi_r)
    assert _ours(p.i.keys) == _ours(p.r.keys) == _ours(seen[0][2])
    # the 1184-byte encapsulation key does not fit one 1280-byte IPv4 datagram... it goes in RFC 7383 fragments
    frames = _intermediates(p)
    assert any(f[16] == PayloadType.SKF for f in frames) and any(f[16] == PayloadType.SK for f in frames)
    assert_esp_works(a, b)


def test_two_additional_exchanges_pair(monkeypatch) -> None:
    seen = _record(monkeypatch)
    p = handshake(*configs(ike_i=TWO))
    a, b = _established(p)
    assert p.i.suite.dh == DhGroup.ECP_384 and p.i.suite.addke == (DhGroup.MLKEM1024, DhGroup.MLKEM768)
    assert p.i.addke_done == p.r.addke_done == 2 and len(seen) == 4
    assert len({s[1] for s in seen}) == 2            # two exchanges, two secrets, each on both sides
    # Message IDs 1 and 2 were IKE_INTERMEDIATE, so IKE_AUTH is 3: both AUTHs covered IntAuth | MID 3
    assert p.i.int_auth.octets()[-4:] == p.r.int_auth.octets()[-4:] == struct.pack("!I", 3)
    assert_esp_works(a, b)


def test_pure_mlkem_needs_no_intermediate() -> None:
    p = handshake(*configs(ike_i="aes256gcm16-prfsha384-mlkem768"))
    a, b = _established(p)
    assert p.i.suite.dh == DhGroup.MLKEM768 and p.i.int_auth is None and not _intermediates(p)
    assert_esp_works(a, b)


def test_intauth_recomputed_from_the_wire(monkeypatch) -> None:
    # unfragmented, so each IKE_INTERMEDIATE message is one datagram to decrypt
    seen = _record(monkeypatch)
    ci, cr = configs(ike_i=HYBRID)
    p = handshake(dataclasses.replace(ci, fragmentation="no"), dataclasses.replace(cr, fragmentation="no"))
    _established(p)
    keys0 = seen[0][0]
    mine = {"i": b"", "r": b""}
    for data in _intermediates(p):
        from_i = bool(data[19] & 0x08)
        key = keys0.sk_ei if from_i else keys0.sk_er
        sk_len = struct.unpack("!H", data[30:32])[0]
        assert len(data) == 28 + sk_len
        pt = AESGCM(key[:32]).decrypt(key[32:] + data[32:40], data[40:], data[:32])
        plain = pt[:len(pt) - 1 - pt[-1]]
        # RFC 9242 §3.3.2's A, with Length fields counting the inner payloads only
        head = data[:24] + struct.pack("!I", 32 + len(plain)) + data[28:30] + struct.pack("!H", 4 + len(plain))
        side = "i" if from_i else "r"
        mine[side] = _prf(keys0.sk_pi if from_i else keys0.sk_pr, mine[side] + head + plain)
    assert (p.i.int_auth.i, p.i.int_auth.r) == (p.r.int_auth.i, p.r.int_auth.r) == (mine["i"], mine["r"])


def test_required_mlkem_against_a_peer_without_it_is_refused_and_explained() -> None:
    p = handshake(*configs(ike_i="aes256gcm16-prfsha384-x25519", ike_r=HYBRID))
    (fail_r,) = p.of("b", IkeSaFailed)
    assert fail_r.notify == Notify.NO_PROPOSAL_CHOSEN
    assert any("ADDKE1): ours ke1_mlkem768, theirs none" in line for line in fail_r.detail), fail_r.detail
    (fail_i,) = p.of("a", IkeSaFailed)
    assert fail_i.notify == Notify.NO_PROPOSAL_CHOSEN and fail_i.received
    assert not _intermediates(p)


def test_optional_additional_exchange_falls_back_to_the_classical_group() -> None:
    p = handshake(*configs(ike_i="aes256gcm16-prfsha384-x25519", ike_r=HYBRID + "-ke1_none"))
    a, b = _established(p)
    assert p.i.suite.addke == () and not _intermediates(p)
    assert_esp_works(a, b)


def test_tampered_intermediate_is_dropped_and_not_answered() -> None:
    # a bit flipped in the initiator's first IKE_INTERMEDIATE fragment fails its ICV: counted, no answer
    p = Pair(*configs(ike_i=HYBRID))
    p.i.initiate(p.now)
    p.pump()                            # IKE_SA_INIT both ways
    p.pump()
    out = p.i.datagrams_to_send()
    assert out and out[0].data[18] == _X43
    bad = bytearray(out[0].data)
    bad[-1] ^= 1
    p.r.receive_datagram(bytes(bad), 500, ("192.0.2.1", 500), p.now)
    assert p.r.stats["integrity_failed"] == 1 and not p.r.datagrams_to_send()
    assert p.r.addke_todo == [DhGroup.MLKEM768]


def test_ike_rekey_after_hybrid_establishment_offers_no_additional_exchange() -> None:
    p = Pair(*configs(ike_i=HYBRID)).run()
    _established(p)
    old_i = p.i
    old_i.rekey_ike(p.now)
    p.run()
    new_a = p.ike("a")
    assert new_a is not old_i and new_a.suite.addke == () and new_a.suite.dh == DhGroup.CURVE25519
    assert _ours(new_a.keys) == _ours(p.ike("b").keys)


# -- the configuration file ---------------------------------------------------------------------------

_YAML = """\
gateway:
  shm: {path: /tmp/pq.shm, sa_capacity: 64}
  control_socket: /tmp/pq.sock
connections:
  site-b:
    local_addrs: [192.0.2.1]
    remote_addrs: 192.0.2.2
    proposals: [PROPOSALS]
    local: {auth: psk, id: gw-a.example}
    remote: {auth: psk, id: gw-b.example}
    children:
      net: {local_ts: 10.1.0.0/16, remote_ts: 10.2.0.0/16, esp_proposals: [aes256gcm16]}
secrets:
  ike-b: {id: [gw-a.example, gw-b.example], secret: 0x00112233445566778899}
"""


def test_config_accepts_the_keywords_and_names_a_bad_one() -> None:
    from control.config import ConfigError, parse_config

    cfg = parse_config(_YAML.replace("PROPOSALS", f"{HYBRID}, {TWO}"), "gw.yaml")
    conn = cfg.connections["site-b"]
    assert conn.proposals == [HYBRID, TWO]
    ike = conn.ike_config(cfg.gateway)      # what the daemon hands the IKE core
    assert ike_suite(select_proposal(ike.proposals, ike.proposals)).addke == (DhGroup.MLKEM768,)
    with pytest.raises(ConfigError) as exc:
        parse_config(_YAML.replace("PROPOSALS", "aes256gcm16-prfsha384-x25519-ke1_kyber"), "gw.yaml")
    assert "gw.yaml:8: connections.site-b.proposals[0]: expected an IKE proposal" in str(exc.value)
    assert "ke1_kyber: unknown key exchange method 'kyber'" in str(exc.value)


class _ReauthPair(Pair):
    """Either side answers new IKE_SA_INIT requests, and the SAs a reauthentication starts are routed."""

    answering = ("a", "b")

    def _collected(self, side, e) -> None:
        new = getattr(e, "new_sa", None)
        if new is not None and new not in self.sas[side]:
            self.sas[side].append(new)


def test_timed_ike_rekey_of_a_hybrid_sa_reauthenticates_with_the_additional_exchange() -> None:
    ci, cr = configs(ike_i=HYBRID)
    p = _ReauthPair(dataclasses.replace(ci, rekey_time=100.0, rand_time=0.0, over_time=30.0), cr).run()
    old = p.ike("a")
    p.clear()
    p.run(until=140.0)
    new_a, new_b = p.ike("a"), p.ike("b")
    assert new_a is not old and old.state == State.DEAD
    assert new_a.suite.addke == (DhGroup.MLKEM768,) and new_a.addke_done == new_b.addke_done == 1
    assert _ours(new_a.keys) == _ours(new_b.keys)
    a, b = p.of("a", ChildSaEstablished), p.of("b", ChildSaEstablished)
    assert_esp_works(a[-1], b[-1])
