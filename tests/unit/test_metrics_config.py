"""``gateway.metrics.listen``: off when absent, IPv4, bracketed IPv6 and localhost accepted, anything else an
error naming the file, the line, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.daemon_harness import gateway_yaml

from control.config import ConfigError, load_config, parse_config
from control.config.metrics_section import parse_listen


def _text(tmp_path: Path, extra: str = "") -> str:
    text = gateway_yaml(shm=tmp_path / "gw.shm", sock=tmp_path / "gw.sock", ike_port=500, natt_port=4500,
                        local="'198.51.100.1'", remote="'198.51.100.2'", remote_port=500, remote_natt_port=4500,
                        local_id="gw-a.example", remote_id="gw-b.example", local_ts="10.1.0.0/16",
                        remote_ts="10.2.0.0/16", start_action="none", export_keys=False)
    return text.replace("gateway:\n", "gateway:\n" + extra, 1) if extra else text


def test_absent_means_off(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(_text(tmp_path))
    assert load_config(cfg).gateway.metrics_listen is None


@pytest.mark.parametrize("listen, want", [("127.0.0.1:9747", ("127.0.0.1", 9747)),
                                          ("0.0.0.0:1", ("0.0.0.0", 1)),
                                          ("'[::1]:9747'", ("::1", 9747)),
                                          ("'[fd00:0::1]:65535'", ("fd00::1", 65535)),
                                          ("localhost:9100", ("localhost", 9100))])
def test_accepted(tmp_path: Path, listen: str, want: tuple[str, int]) -> None:
    cfg = parse_config(_text(tmp_path, f"  metrics: {{listen: {listen}}}\n"), "gw.yaml")
    assert cfg.gateway.metrics_listen == want


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http",
                                    "'::1:9747'", "'[::1]'", "'[127.0.0.1]:9747'", "example.com:9747",
                                    "999.0.0.1:9747", "':9747'"])
def test_refused_with_file_line_field(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_text(tmp_path, f"  metrics: {{listen: {listen}}}\n"), "gw.yaml")
    (p,) = exc.value.problems
    assert p.startswith("gw.yaml:2: gateway.metrics.listen: expected HOST:PORT"), p
    assert "[::1]:9747" in p and "got " in p


def test_unknown_key_and_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_text(tmp_path, "  metrics: {listen: '127.0.0.1:9747', path: /m}\n"), "gw.yaml")
    assert any("gateway.metrics.path: expected one of the known keys: listen" in p for p in exc.value.problems)
    with pytest.raises(ConfigError) as exc:
        parse_config(_text(tmp_path, "  metrics: 127.0.0.1:9747\n"), "gw.yaml")
    assert any("gateway.metrics: expected a mapping" in p for p in exc.value.problems)


def test_parse_listen_is_strict() -> None:
    assert parse_listen("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_listen("[::]:80") == ("::", 80)
    for bad in ("", ":", "10.0.0.1:", "10.0.0.1:-1", "[::1]x:80", "10.0.0.1:08x"):
        assert parse_listen(bad) is None, bad
