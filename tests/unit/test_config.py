"""The YAML configuration: the examples load, and every mistake is reported with file, line, field path and
what was expected, never echoing a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.cli import main
from control.config import ConfigError, load_config, parse_config, parse_duration

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

GOOD = """\
gateway:
  shm: {path: /tmp/x.shm, sa_capacity: 64}
  control_socket: /tmp/x.sock
connections:
  site-b:
    local_addrs: [192.0.2.1]
    remote_addrs: 192.0.2.2
    proposals: [aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384]
    local: {auth: psk, id: gw-a.example}
    remote: {auth: psk, id: gw-b.example}
    children:
      net:
        local_ts: [10.1.0.0/16, "10.3.0.0/24[tcp/443]"]
        remote_ts: 10.2.0.0/16
        esp_proposals: [aes128gcm16, aes256-sha256-esn]
        start_action: trap
        rekey_time: 1h
        rekey_bytes: 500M
        life_bytes: 600M
secrets:
  ike-b:
    id: [gw-a.example, gw-b.example]
    secret: 0x00112233445566778899
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml")
    return exc.value.problems


@pytest.mark.parametrize("path", [p for p in EXAMPLES if "auth: pubkey" not in p.read_text()], ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.connections
    for conn in cfg.connections.values():
        assert conn.psk
        conn.ike_config(cfg.gateway)            # the core accepts what the loader produced
        for c in conn.children:
            c.child_config()


def test_good_config_converts() -> None:
    cfg = parse_config(GOOD, "gw.yaml")
    conn = cfg.connections["site-b"]
    assert conn.remote_addrs == ["192.0.2.2"] and conn.local_id == "gw-a.example"
    assert conn.psk == bytes.fromhex("00112233445566778899")        # hex kept, leading zero byte too
    child = conn.children[0]
    assert child.start_action == "trap" and child.rekey_time == 3600 and child.hard_seconds == 3960
    assert child.rekey_bytes == 500 << 20 and child.life_bytes == 600 << 20
    assert child.local_ts[1].proto == 6 and (child.local_ts[1].start_port, child.local_ts[1].end_port) == (443, 443)
    assert cfg.gateway.capacities.n_sa == 64 and cfg.gateway.ike_port == 500
    assert "0011" not in repr(cfg) and "0011" not in repr(conn)
    ike = conn.ike_config(cfg.gateway)
    assert len(ike.proposals) == 2 and ike.children[0].name == "net"


def test_error_names_file_line_path_and_expectation() -> None:
    bad = GOOD.replace("esp_proposals: [aes128gcm16, aes256-sha256-esn]", "esp_proposals: [aes999gcm16]")
    (msg,) = problems(bad)
    assert msg.startswith("gw.yaml:15: connections.site-b.children.net.esp_proposals[0]: expected an ESP proposal")
    assert "aes999gcm16" in msg


@pytest.mark.parametrize("old,new,where", [
    ("remote_addrs: 192.0.2.2", "remote_addrs: gw-b.example.org", "gw.yaml:7: connections.site-b.remote_addrs"),
    ("    proposals: [aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384]", "    proposals: [aes128gcm16-x25519]",
     "gw.yaml:8: connections.site-b.proposals[0]: expected an IKE proposal"),
    ("remote_ts: 10.2.0.0/16", "remote_ts: 10.2.0.0/33", "gw.yaml:14: connections.site-b.children.net.remote_ts"),
    ("start_action: trap", "start_action: always", "gw.yaml:16: connections.site-b.children.net.start_action: "
     "expected none, trap or start"),
    ("rekey_time: 1h", "rekey_time: 1 hour", "gw.yaml:17: connections.site-b.children.net.rekey_time: expected a "
     "duration"),
    ("life_bytes: 600M", "life_bytes: 400M", "gw.yaml:19: connections.site-b.children.net.life_bytes: expected "
     "more than rekey_bytes"),
    ("sa_capacity: 64", "sa_capacity: lots", "gw.yaml:2: gateway.shm.sa_capacity: expected an integer"),
    ("    local: {auth: psk, id: gw-a.example}", "    local: {auth: pubkey, id: gw-a.example, certs: [/nonexist.pem]}",
     "gw.yaml:9: connections.site-b.local.certs[0]: expected a readable certificate/key file"),
    # names the system cannot hold are a config problem too, not an OSError out of the loader
    ("    local: {auth: psk, id: gw-a.example}",
     "    local: {auth: pubkey, id: gw-a.example, certs: [" + "a" * 5000 + "]}",
     "gw.yaml:9: connections.site-b.local.certs[0]: expected a readable certificate/key file, got 'aaa"),
    ("    local: {auth: psk, id: gw-a.example}", '    local: {auth: pubkey, id: gw-a.example, certs: ["/x\\0.pem"]}',
     "gw.yaml:9: connections.site-b.local.certs[0]: expected a readable certificate/key file, got '/x\\x00.pem' "
     "(not a file name: it holds a NUL byte)"),
    ("        rekey_time: 1h", "        rekey_time: 1h\n        colour: blue",
     "gw.yaml:18: connections.site-b.children.net.colour: expected one of the known keys"),
])
def test_each_error(old: str, new: str, where: str) -> None:
    assert old in GOOD
    got = problems(GOOD.replace(old, new))
    assert any(p.startswith(where) for p in got), got


def test_all_problems_listed_at_once() -> None:
    bad = GOOD.replace("start_action: trap", "start_action: x").replace("remote_ts: 10.2.0.0/16", "remote_ts: y")
    got = problems(bad)
    assert len(got) == 2 and "start_action" in got[1] and "remote_ts" in got[0]


def test_secrets_never_echoed() -> None:
    bad = GOOD.replace("secret: 0x00112233445566778899", "secret: 0xNOTHEXsupersecret")
    got = problems(bad)
    assert any("secrets.ike-b.secret: expected" in p for p in got), got
    assert not any("supersecret" in p for p in got)
    # a connection without a matching secret says what it needs, no key shown
    got = problems(GOOD.replace("id: [gw-a.example, gw-b.example]", "id: [other.example]"))
    assert any("connections.site-b: expected a secrets entry" in p for p in got), got


def test_secret_ids_match_as_identities_not_spellings() -> None:
    # strongSwan reads "@gw-a.example" and "gw-a.example" as one FQDN identity: the secret still applies
    cfg = parse_config(GOOD.replace("id: [gw-a.example, gw-b.example]", "id: ['@gw-a.example', '@gw-b.example']"),
                       "gw.yaml")
    assert cfg.connections["site-b"].psk == bytes.fromhex("00112233445566778899")
    # an FQDN is not the email-style identity with the same letters
    got = problems(GOOD.replace("id: [gw-a.example, gw-b.example]", "id: [x@gw-a.example]"))
    assert any("connections.site-b: expected a secrets entry" in p for p in got), got


def test_structural_errors() -> None:
    assert problems("")[0] == "gw.yaml: the file is empty: expected gateway, connections and secrets sections"
    assert problems("connections: [\n")[0].startswith("gw.yaml:2: not valid YAML")
    dup = problems(GOOD.replace("    remote_addrs: 192.0.2.2\n", "    remote_addrs: 192.0.2.2\n    remote_addrs: x\n"))
    assert dup == ["gw.yaml:8: key 'remote_addrs' appears twice (first on line 7)"]
    got = problems(GOOD.replace("remote_addrs: 192.0.2.2", "remote_addrs: '%any'"))
    assert any("start_action: expected none: remote_addrs is %any" in p for p in got), got
    got = problems(GOOD.replace("        local_ts: [10.1.0.0/16, \"10.3.0.0/24[tcp/443]\"]\n", ""))
    assert any(p.startswith("gw.yaml:13: connections.site-b.children.net.local_ts: expected") for p in got), got


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "10m", "4h", "1d", "1w")] == [90, 90, 600, 14400, 86400, None]


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "gw.yaml"
    f.write_text(GOOD)
    assert main(["check", "-c", str(f)]) == 0
    assert "OK (1 connection(s), 1 child(ren))" in capsys.readouterr().out
    f.write_text(GOOD.replace("mode: tunnel", "").replace("start_action: trap", "start_action: now"))
    assert main(["check", "-c", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:16: connections.site-b.children.net.start_action" in err
    assert main(["check", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _cert_example_files(tmp_path: Path) -> dict[str, str]:
    """CA and gateway certificates matching the certificate examples, under tmp_path instead of /etc/ipsecgw."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    from support.pki import CA, make_cert, new_key, pem_cert, pem_key, write

    def dn(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca = CA(kind="p256")
    write(tmp_path / "x509ca/ca.pem", pem_cert(ca.cert))
    for gw in ("gw-a", "gw-b"):
        key = new_key("p256")
        write(tmp_path / f"x509/{gw}.pem", pem_cert(make_cert(dn(gw), key.public_key(), ca.name, ca.key)))
        write(tmp_path / f"private/{gw}.key", pem_key(key))
    return {"/etc/ipsecgw/": f"{tmp_path}/"}


def test_certificate_examples_authenticate_each_other(tmp_path: Path) -> None:
    """site-to-site-cert-{a,b}.yaml, given certificates at their paths, load and complete IKE_AUTH together."""
    from support.ike_pair import assert_esp_works, handshake

    from control.ike.events import ChildSaEstablished, IkeSaEstablished

    subst = _cert_example_files(tmp_path)
    cfgs = []
    for side in ("a", "b"):
        text = (EXAMPLES[0].parent / f"site-to-site-cert-{side}.yaml").read_text()
        for old, new in subst.items():
            text = text.replace(old, new)
        cfg = parse_config(text, f"site-to-site-cert-{side}.yaml")
        (conn,) = cfg.connections.values()
        assert conn.local_auth == conn.remote_auth == "pubkey" and not conn.psk
        cfgs.append(conn.ike_config(cfg.gateway))
    net = handshake(*cfgs)
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    assert_esp_works(ci, cr)
    (ei,) = net.of("a", IkeSaEstablished)
    assert str(ei.remote_id) == "C=CH, O=example, CN=gw-b"


def test_package_keeps_its_public_names() -> None:
    """control/config.py became a package: what the daemon, the commands and the tests import from
    control.config is still there, and is the object its defining module holds."""
    import control.config as cc
    from control.config import loader, model

    for name in cc.__all__:
        assert hasattr(cc, name), name
    assert cc.parse_config is loader.parse_config and cc.load_config_or_report is loader.load_config_or_report
    assert cc.ConnectionConfig is model.ConnectionConfig and cc.core_schedules_rekeys is model.core_schedules_rekeys


# Found by tests/fuzz/config_loader (tests/fuzz/crashers/config_loader/): YAML the composer accepts but
# that ended in RecursionError, ConstructorError or minutes of alias expansion inside the tree walk.
@pytest.mark.parametrize(("text", "says"), [
    ("gateway: &x {a: *x}\n", "a YAML alias that contains itself"),
    ("a: &x [1, *x]\n", "a YAML alias that contains itself"),
    ("connections:\n  peer: !92.0.2.1 x\n", "not valid YAML: could not determine a constructor"),
    ("? &k [1, *k]\n: 2\n", "expected a plain key, got a list"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", "expected at most 64 levels of nesting"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "expected at most 64 levels of nesting"),
    ("a: &a [" + ",".join("x" * 10) + "]\n" + "".join(
        f"{n}: &{n} [" + ",".join([f"*{p}"] * 10) + "]\n" for p, n in zip("abcde", "bcdef", strict=True))
     + "g: [" + ",".join(["*f"] * 10) + "]\n", "expected at most 200000 values"),
])
def test_hostile_yaml_is_a_config_error(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match="^f.yaml") as exc:
        parse_config(text, "f.yaml")
    assert says in str(exc.value)
