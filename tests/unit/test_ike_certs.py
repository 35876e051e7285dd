"""Certificate authentication (RFC 7427 digital signatures) between two of our IKE SAs, in process,
with a test CA made here; plus DN identities, the AlgorithmIdentifiers against RFC 7427's appendix,
and the credential checks."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from support.ike_pair import Pair, assert_esp_works, child, handshake
from support.pki import CA, NOW, name, new_key, pem_cert, pem_key, write

from control.ike import auth_sig
from control.ike.certs import (
    CertError,
    Credentials,
    ca_key_hash,
    dn_from_string,
    dn_to_string,
    id_matches_cert,
    load_credentials,
    verify_chain,
)
from control.ike.config import Identity, IkeConfig
from control.ike.constants import AuthMethod, IdType, Notify, PayloadType
from control.ike.events import ChildSaEstablished, IkeSaEstablished, IkeSaFailed
from control.ike.message import Message
from control.ike.payloads import AuthPayload, CertPayload


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


def cert_configs(ca_i: CA, ca_r: CA, kind_i="p256", kind_r="p256", id_i="gw-a.example", id_r="gw-b.example",
                 sans_i=None, sans_r=None, rsa_pss=False, trust_i=None, trust_r=None, remote_id_i=None,
                 remote_id_r=None, cert_kw_i=None, chain_i=()):
    """Initiator with a cert from ca_i, responder from ca_r; each trusts the other's CA unless told."""
    cert_i, key_i = ca_i.issue("gw-a", kind_i, sans_i if sans_i is not None else [id_i], **(cert_kw_i or {}))
    cert_r, key_r = ca_r.issue("gw-b", kind_r, sans_r if sans_r is not None else [id_r])
    ci = IkeConfig(Identity.from_string(id_i), b"", Identity.from_string(remote_id_i or id_r),
                   children=[child()], local_auth="pubkey", remote_auth="pubkey",
                   credentials=Credentials(cert_i, key_i, list(chain_i)), cacerts=trust_i or [ca_r.cert],
                   rsa_pss=rsa_pss)
    cr = IkeConfig(Identity.from_string(id_r), b"", Identity.from_string(remote_id_r or id_i),
                   children=[child(local="10.2.0.0/16", remote="10.1.0.0/16")], local_auth="pubkey",
                   remote_auth="pubkey", credentials=Credentials(cert_r, key_r), cacerts=trust_r or [ca_i.cert],
                   rsa_pss=rsa_pss)
    return ci, cr


def assert_up(net: Pair) -> None:
    assert not net.of("a", IkeSaFailed) and not net.of("b", IkeSaFailed), net.events
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    assert_esp_works(ci, cr)


@pytest.mark.parametrize("kind_i,kind_r,pss", [
    ("p256", "p256", False), ("p384", "p521", False), ("rsa", "rsa", False), ("rsa", "p256", True),
    ("ed25519", "ed25519", False), ("ed25519", "rsa", False),
])
def test_signature_auth(ca: CA, kind_i: str, kind_r: str, pss: bool) -> None:
    net = handshake(*cert_configs(ca, ca, kind_i, kind_r, rsa_pss=pss))
    assert_up(net)
    (ei,), (er,) = net.of("a", IkeSaEstablished), net.of("b", IkeSaEstablished)
    assert str(ei.remote_id) == "gw-b.example" and str(er.remote_id) == "gw-a.example"


def test_certreq_and_hash_notify_in_ike_sa_init(ca: CA) -> None:
    net = handshake(*cert_configs(ca, ca))
    assert_up(net)
    req, resp = Message.parse(net.wire[0]), Message.parse(net.wire[1])
    for m in (req, resp):
        (n,) = m.notifies(Notify.SIGNATURE_HASH_ALGORITHMS)
        assert auth_sig.parse_hash_algorithms(n.data) == {2, 3, 4, 5}
    (creq,) = [p for p in resp.payloads if isinstance(p, CertPayload)]
    assert creq.type == PayloadType.CERTREQ and creq.encoding == 4 and creq.data == ca_key_hash(ca.cert)
    assert len(creq.data) == 20


@pytest.mark.parametrize("id_i,sans_i", [
    ("C=CH, O=ipsecgw test, CN=gw-a", []),           # subject DN
    ("gw-a@example.org", ["gw-a@example.org"]),      # RFC 822
    ("192.0.2.1", ["192.0.2.1"]),                    # IPv4
    ("2001:db8::1", ["2001:db8::1"]),                # IPv6
    ("GW-A.example", ["gw-a.example"]),              # FQDNs compare case-insensitively
])
def test_id_types(ca: CA, id_i: str, sans_i: list[str]) -> None:
    net = handshake(*cert_configs(ca, ca, id_i=id_i, sans_i=sans_i))
    assert_up(net)
    (er,) = net.of("b", IkeSaEstablished)
    assert er.remote_id.id_type == Identity.from_string(id_i).id_type


def test_intermediate_ca(ca: CA) -> None:
    mid = CA("ipsecgw intermediate", parent=ca)
    # the responder trusts only the root: the initiator sends its intermediate as a second CERT
    net = handshake(*cert_configs(mid, ca, chain_i=[mid.cert], trust_r=[ca.cert]))
    assert_up(net)
    # without the intermediate in CERT payloads the responder cannot build the chain
    net = handshake(*cert_configs(mid, ca, trust_r=[ca.cert]))
    assert net.of("b", IkeSaFailed)[0].notify == Notify.AUTHENTICATION_FAILED


def _fails(net: Pair) -> str:
    (fr,), (fi,) = net.of("b", IkeSaFailed), net.of("a", IkeSaFailed)
    assert fr.notify == fi.notify == Notify.AUTHENTICATION_FAILED
    assert not net.of("b", IkeSaEstablished) and not net.of("a", ChildSaEstablished)
    return str(fr.reason) if hasattr(fr, "reason") else repr(fr)


def test_wrong_ca(ca: CA) -> None:
    other = CA("some other CA")
    assert "not issued by a configured CA" in _fails(handshake(*cert_configs(other, ca, trust_r=[ca.cert])))


def test_responder_with_wrong_ca_fails_on_initiator(ca: CA) -> None:
    other = CA("some other CA")
    net = handshake(*cert_configs(ca, other, trust_i=[ca.cert]))
    # the responder accepted us, but we reject its certificate
    assert net.of("a", IkeSaFailed)[0].notify == Notify.AUTHENTICATION_FAILED
    assert not net.of("a", IkeSaEstablished)


def test_expired_cert(ca: CA) -> None:
    kw = {"not_before": NOW - datetime.timedelta(days=10), "not_after": NOW - datetime.timedelta(days=1)}
    assert "expired" in _fails(handshake(*cert_configs(ca, ca, cert_kw_i=kw)))


def test_not_yet_valid_cert(ca: CA) -> None:
    kw = {"not_before": NOW + datetime.timedelta(days=1), "not_after": NOW + datetime.timedelta(days=10)}
    assert "not valid before" in _fails(handshake(*cert_configs(ca, ca, cert_kw_i=kw)))


def test_id_not_in_cert(ca: CA) -> None:
    # the initiator claims gw-a.example but its certificate names only gw-x.example
    reason = _fails(handshake(*cert_configs(ca, ca, sans_i=["gw-x.example"])))
    assert "not in its certificate" in reason


def test_id_not_the_configured_one(ca: CA) -> None:
    _fails(handshake(*cert_configs(ca, ca, remote_id_r="someone-else.example")))


def test_forged_signature(ca: CA) -> None:
    """A certificate of the right CA but a signature by another key must fail."""
    ci, cr = cert_configs(ca, ca)
    stolen, _ = ca.issue("gw-a", "p256", ["gw-a.example"])
    object.__setattr__(ci.credentials, "cert", stolen)      # bypass the key/cert check on purpose
    assert "signature" in _fails(handshake(ci, cr))


def test_psk_peer_against_pubkey_responder(ca: CA) -> None:
    ci, cr = cert_configs(ca, ca)
    ci.local_auth, ci.psk = "psk", b"some psk"
    assert "we expect a digital signature" in _fails(handshake(ci, cr))


def test_mixed_pubkey_and_psk(ca: CA) -> None:
    """Each direction may use its own method, as in swanctl (initiator signs, responder uses the PSK)."""
    ci, cr = cert_configs(ca, ca)
    ci.remote_auth, ci.psk = "psk", b"shared"
    cr.local_auth, cr.psk = "psk", b"shared"
    assert_up(handshake(ci, cr))


# ---- pieces ----

def test_dn_text_round_trip() -> None:
    text = "C=CH, O=strongSwan, CN=gw-a"
    der = dn_from_string(text)
    assert dn_to_string(der) == text
    assert der == name("gw-a", "strongSwan").public_bytes()
    ident = Identity.from_string(text)
    assert ident.id_type == IdType.DER_ASN1_DN and str(ident) == text
    assert dn_to_string(dn_from_string("CN=a\\, b, E=x@y.example, OU=ops")) == "CN=a, b, E=x@y.example, OU=ops"
    with pytest.raises(ValueError, match="unknown attribute"):
        dn_from_string("XX=1, CN=a")


def test_algorithm_identifiers_are_rfc7427s(ca: CA) -> None:
    """RFC 7427 Appendix A gives the AlgorithmIdentifier encodings byte by byte."""
    vectors = {
        "rsa": "300d06092a864886f70d01010b0500",                       # A.1.3 sha256WithRSAEncryption
        "p256": "300a06082a8648ce3d040302",                            # A.3.1 ecdsa-with-sha256
        "p384": "300a06082a8648ce3d040303",                            # A.3.2 ecdsa-with-sha384
        "p521": "300a06082a8648ce3d040304",                            # A.3.3 ecdsa-with-sha512
        # RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32: the same DER as Chromium's verify_signed_data test data
        # rsa-pss-sha256-using-pss-key-with-params.pem (an encoding we did not produce)
        "pss": "304106092a864886f70d01010a3034a00f300d06096086480165030402010500"
               "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120",
    }
    for kind, hexalg in vectors.items():
        key = new_key("rsa" if kind == "pss" else kind)
        data = auth_sig.sign(key, b"octets", {2, 3, 4, 5}, rsa_pss=kind == "pss")
        assert data[0] == len(bytes.fromhex(hexalg)) and data[1:1 + data[0]].hex() == hexalg, kind
        assert auth_sig.verify(key.public_key(), data, b"octets")
        with pytest.raises(auth_sig.SignatureError):
            auth_sig.verify(key.public_key(), data, b"other octets")
    ed = new_key("ed25519")
    data = auth_sig.sign(ed, b"x", {5})
    assert data[1:1 + data[0]].hex() == "300506032b6570"                # RFC 8420 §2 id-Ed25519
    with pytest.raises(auth_sig.SignatureError, match="identity"):
        auth_sig.sign(ed, b"x", {2})
    with pytest.raises(auth_sig.SignatureError, match="not RSA"):
        auth_sig.verify(ed.public_key(), auth_sig.sign(new_key("rsa"), b"x"), b"x")


def test_verify_chain_and_id_checks(ca: CA) -> None:
    cert, _ = ca.issue("gw-a", "p256", ["gw-a.example", "198.51.100.9", "ops@example.org"])
    assert verify_chain(cert, [], [ca.cert]) == ca.cert
    with pytest.raises(CertError, match="expired"):
        verify_chain(cert, [], [ca.cert], when=NOW + datetime.timedelta(days=365))
    assert id_matches_cert(IdType.FQDN, b"gw-a.example", cert)
    assert id_matches_cert(IdType.IPV4_ADDR, bytes([198, 51, 100, 9]), cert)
    assert id_matches_cert(IdType.RFC822_ADDR, b"ops@example.org", cert)
    assert id_matches_cert(IdType.DER_ASN1_DN, dn_from_string("C=CH, O=ipsecgw test, CN=gw-a"), cert)
    assert not id_matches_cert(IdType.FQDN, b"gw-b.example", cert)
    assert not id_matches_cert(IdType.DER_ASN1_DN, dn_from_string("C=CH, O=ipsecgw test, CN=gw-b"), cert)


def test_credential_errors(ca: CA, tmp_path) -> None:
    cert, key = ca.issue("gw-a", "p256", ["gw-a.example"])
    c, k = write(tmp_path / "a.pem", pem_cert(cert)), write(tmp_path / "a.key", pem_key(key))
    assert "gw-a" in repr(load_credentials(c, k))
    with pytest.raises(CertError, match=r"certs: cannot read .*missing.pem"):
        load_credentials(tmp_path / "missing.pem", k)
    other = write(tmp_path / "b.key", pem_key(new_key("p256")))
    with pytest.raises(CertError, match="does not belong to the certificate") as exc:
        load_credentials(c, other)
    assert "PRIVATE" not in str(exc.value)
    x = write(tmp_path / "x.key", pem_key(x25519.X25519PrivateKey.generate()))
    with pytest.raises(CertError, match="key: unsupported key type"):
        load_credentials(c, x)
    with pytest.raises(CertError, match="not an X.509 certificate"):
        load_credentials(k, k)
    with pytest.raises(ValueError, match="cacerts"):
        IkeConfig(Identity.from_string("a"), b"x", local_auth="psk", remote_auth="pubkey")
    with pytest.raises(ValueError, match="credentials"):
        IkeConfig(Identity.from_string("a"), b"x", local_auth="pubkey")


def test_auth_payload_method_is_digital_signature(ca: CA) -> None:
    """Our AUTH uses method 14 (checked on the SA's own IKE_AUTH payload builder)."""
    from control.ike.tasks.ike_auth import _our_auth

    ci, cr = cert_configs(ca, ca)
    net = handshake(ci, cr)
    assert_up(net)
    idp = ci.local_id.payload(True)
    payloads = _our_auth(net.i, True, idp)
    assert isinstance(payloads[0], CertPayload) and payloads[0].encoding == 4
    assert isinstance(payloads[-1], AuthPayload) and payloads[-1].method == AuthMethod.DIGITAL_SIGNATURE


# ---- the YAML loader ----

def _yaml(tmp_path, local: str, remote: str, secrets: str = "") -> str:
    return f"""\
gateway:
  shm: {{path: {tmp_path}/x.shm, sa_capacity: 64}}
  control_socket: {tmp_path}/x.sock
connections:
  site-b:
    local_addrs: [192.0.2.1]
    remote_addrs: 192.0.2.2
    local: {local}
    remote: {remote}
    children:
      net:
        local_ts: 10.1.0.0/16
        remote_ts: 10.2.0.0/16
{secrets}"""


def _load_problems(text: str) -> list[str]:
    from control.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml")
    return exc.value.problems


def test_config_pubkey(ca: CA, tmp_path) -> None:
    from control.config import parse_config

    cert, key = ca.issue("gw-a", "ed25519", ["gw-a.example"])
    c, k = write(tmp_path / "a.pem", pem_cert(cert)), write(tmp_path / "a.key", pem_key(key))
    cap = write(tmp_path / "ca.pem", pem_cert(ca.cert))
    cfg = parse_config(_yaml(tmp_path, f"{{auth: pubkey, certs: [{c}], key: {k}}}",
                             f"{{auth: pubkey, id: gw-b.example, cacerts: [{cap}]}}"), "gw.yaml")
    conn = cfg.connections["site-b"]
    # no id: the certificate's subject, as strongSwan does
    assert conn.local_id == "C=CH, O=ipsecgw test, CN=gw-a"
    ike = conn.ike_config(cfg.gateway)
    assert ike.local_auth == ike.remote_auth == "pubkey" and ike.cacerts[0] == ca.cert
    assert ike.local_id.id_type == IdType.DER_ASN1_DN and ike.credentials.cert == cert
    text = repr(conn) + repr(ike) + repr(ike.credentials)
    assert "PRIVATE" not in text and pem_key(key).decode() not in text


def test_config_pubkey_errors(ca: CA, tmp_path) -> None:
    cert, key = ca.issue("gw-a", "p256", ["gw-a.example"])
    c, k = write(tmp_path / "a.pem", pem_cert(cert)), write(tmp_path / "a.key", pem_key(key))
    other = write(tmp_path / "o.key", pem_key(new_key("p256")))
    x = write(tmp_path / "x.key", pem_key(x25519.X25519PrivateKey.generate()))
    cap = write(tmp_path / "ca.pem", pem_cert(ca.cert))
    remote = f"{{auth: pubkey, id: gw-b.example, cacerts: [{cap}]}}"
    cases = [
        (f"{{auth: pubkey, certs: [{c}], key: {tmp_path}/gone.key}}", remote,
         "gw.yaml:8: connections.site-b.local.key: expected a readable private key file"),
        (f"{{auth: pubkey, certs: [{c}], key: {other}}}", remote,
         "gw.yaml:8: connections.site-b.local.key: expected the private key of"),
        (f"{{auth: pubkey, certs: [{c}], key: {x}}}", remote,
         "gw.yaml:8: connections.site-b.local.key: expected the private key of"),
        (f"{{auth: pubkey, certs: [{c}]}}", remote, "gw.yaml:8: connections.site-b.local.key: expected the private"),
        ("{auth: pubkey, id: gw-a.example}", remote, "gw.yaml:8: connections.site-b.local.certs: expected our"),
        (f"{{auth: pubkey, certs: [{k}], key: {k}}}", remote,
         "gw.yaml:8: connections.site-b.local.certs: expected certificate files"),
        (f"{{auth: pubkey, certs: [{c}], key: {k}}}", "{auth: pubkey, id: gw-b.example}",
         "gw.yaml:9: connections.site-b.remote.cacerts: expected the CA certificate"),
        (f"{{auth: pubkey, certs: [{c}], key: {k}}}", f"{{auth: pubkey, cacerts: [{k}]}}",
         "gw.yaml:9: connections.site-b.remote.cacerts[0]: expected a CA certificate"),
        (f"{{auth: rsa, certs: [{c}], key: {k}}}", remote, "gw.yaml:8: connections.site-b.local.auth: expected psk or"),
    ]
    for local, rem, where in cases:
        got = _load_problems(_yaml(tmp_path, local, rem))
        assert any(p.startswith(where) for p in got), (where, got)
        assert not any("BEGIN" in p for p in got)
    got = _load_problems(_yaml(tmp_path, f"{{auth: pubkey, certs: [{c}], key: {x}}}", remote))
    assert any("unsupported key type X25519PrivateKey" in p for p in got), got


def test_config_dn_identity_and_mixed_psk(ca: CA, tmp_path) -> None:
    from control.config import parse_config

    cert, key = ca.issue("gw-a", "p256", [])
    c, k = write(tmp_path / "a.pem", pem_cert(cert)), write(tmp_path / "a.key", pem_key(key))
    secrets = "secrets:\n  ike-b: {id: [gw-b.example], secret: s3cret-for-the-remote}\n"
    cfg = parse_config(_yaml(tmp_path, f"{{auth: pubkey, id: 'C=CH, O=ipsecgw test, CN=gw-a', certs: [{c}], "
                                       f"key: {k}}}", "{auth: psk, id: gw-b.example}", secrets), "gw.yaml")
    ike = cfg.connections["site-b"].ike_config(cfg.gateway)
    assert str(ike.local_id) == "C=CH, O=ipsecgw test, CN=gw-a"
    assert ike.local_auth == "pubkey" and ike.remote_auth == "psk" and ike.psk == b"s3cret-for-the-remote"
