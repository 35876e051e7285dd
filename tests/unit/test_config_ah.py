"""An AH child in the YAML configuration: ``ah_proposals`` in strongSwan keywords, exclusive with
``esp_proposals``, shown by ``ipsecgw check`` and carried into the IKE core's child as protocol AH."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.cli import main
from control.config import ConfigError, parse_config
from control.ike.constants import Esn, Integ, ProtocolId, TransformType

CONF = """\
gateway:
  shm: {path: /tmp/x.shm, sa_capacity: 64}
  control_socket: /tmp/x.sock
connections:
  site-b:
    local_addrs: [192.0.2.1]
    remote_addrs: 192.0.2.2
    proposals: [aes128gcm16-prfsha256-x25519]
    local: {auth: psk, id: gw-a.example}
    remote: {auth: psk, id: gw-b.example}
    children:
      net:
        local_ts: 10.1.0.0/16
        remote_ts: 10.2.0.0/16
        PROPOSALS
secrets:
  ike-b:
    id: [gw-a.example, gw-b.example]
    secret: 0x00112233445566778899
"""


def _conf(line: str) -> str:
    return CONF.replace("PROPOSALS", line)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml")
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize("kw,integ", [
    ("sha1", Integ.HMAC_SHA1_96), ("sha256", Integ.HMAC_SHA2_256_128), ("sha384", Integ.HMAC_SHA2_384_192),
    ("sha512", Integ.HMAC_SHA2_512_256), ("aes128gmac", Integ.AES_128_GMAC), ("aes192gmac", Integ.AES_192_GMAC),
    ("aes256gmac", Integ.AES_256_GMAC),
])
def test_ah_proposals_make_an_ah_child(kw: str, integ: int) -> None:
    cfg = parse_config(_conf(f"ah_proposals: [{kw}-esn, {kw}-noesn-x25519]"), "gw.yaml")
    conn = cfg.connections["site-b"]
    spec = conn.children[0]
    assert spec.protocol == "ah" and spec.esp_proposals == []
    assert spec.ah_proposals == [f"{kw}-esn", f"{kw}-noesn-x25519"]
    child = conn.ike_config(cfg.gateway).children[0]
    assert child.protocol == ProtocolId.AH and child.is_ah
    first, second = child.proposals
    assert first.protocol == second.protocol == ProtocolId.AH
    assert [(t.type, t.id) for t in first.transforms] == [(TransformType.INTEG, integ), (TransformType.ESN, Esn.YES)]
    assert (TransformType.DH, 31) in [(t.type, t.id) for t in second.transforms]
    assert not any(t.type == TransformType.ENCR for p in child.proposals for t in p.transforms)


def test_esp_child_stays_esp() -> None:
    cfg = parse_config(_conf("esp_proposals: [aes128gcm16]"), "gw.yaml")
    spec = cfg.connections["site-b"].children[0]
    assert spec.protocol == "esp" and spec.ah_proposals == []
    assert cfg.connections["site-b"].ike_config(cfg.gateway).children[0].protocol == ProtocolId.ESP


def test_both_esp_and_ah_is_an_error_naming_the_field() -> None:
    text = _conf("esp_proposals: [aes128gcm16]\n        ah_proposals: [sha256]")
    (msg,) = _problems(text)
    assert "connections.site-b.children.net.ah_proposals" in msg and "either esp_proposals or ah_proposals" in msg


@pytest.mark.parametrize("bad,why", [
    ("aes128-sha256", "takes no cipher"),
    ("aes128gcm16", "takes no cipher"),
    ("md5", "unknown or unsupported ah proposal keyword"),
    ("esn", "needs an integrity algorithm"),
])
def test_bad_ah_proposal_is_reported(bad: str, why: str) -> None:
    (msg,) = _problems(_conf(f"ah_proposals: [{bad}]"))
    assert msg.startswith("gw.yaml:15: connections.site-b.children.net.ah_proposals[0]: expected an AH proposal")
    assert why in msg


def test_check_shows_the_ah_child(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "gw.yaml"
    f.write_text(_conf("ah_proposals: [sha256-esn, aes256gmac]"))
    assert main(["check", "-c", str(f)]) == 0
    out = capsys.readouterr().out
    assert "site-b/net: AH tunnel, sha256-esn, aes256gmac" in out
    f.write_text(_conf("esp_proposals: [aes128gcm16]"))
    assert main(["check", "-c", str(f)]) == 0
    assert "site-b/net: ESP tunnel, aes128gcm16" in capsys.readouterr().out
