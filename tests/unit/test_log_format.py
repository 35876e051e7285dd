"""gateway.log_format and --log-format: the JSON formatter (one object a line: ts, level, logger, event, the SA
fields), the text format unchanged by the SA fields, the config's checks, and the choice reaching the
supervisor's workers."""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from control.cli import build_parser
from control.config import ConfigError, parse_config
from control.log_fields import child_fields, ike_fields
from control.supervisor import Supervisor
from fastpath.logs import set_format, setup_logging

CONFIG = """\
gateway:
  control_socket: /tmp/logfmt-test.sock
  shm: {path: /tmp/logfmt-test.shm}
EXTRA
connections: {}
"""


@pytest.fixture
def restore_logging():
    lg = logging.getLogger("ipsecgw")
    saved = (lg.handlers[:], lg.level, lg.propagate)
    yield lg
    lg.handlers[:], lg.level, lg.propagate = saved[0], saved[1], saved[2]


def _entries() -> tuple[SimpleNamespace, SimpleNamespace]:
    # the attributes log_fields reads, as IkeEntry / ChildEntry carry them
    ike = SimpleNamespace(conn=SimpleNamespace(name="site-b"), label="site-b[3]", spi=bytes.fromhex("0011223344556677"),
                          ike=SimpleNamespace(remote=("192.0.2.2", 500)))
    child = SimpleNamespace(conn="site-b", name="net", ike_spi=ike.spi, spi_in=0xC1A2B3C4, spi_out=0x0000ABCD)
    return ike, child


def test_json_lines_carry_the_sa_fields(restore_logging: logging.Logger) -> None:
    out = io.StringIO()
    setup_logging("debug", out, "json")
    ike, child = _entries()
    log = logging.getLogger("ipsecgw.daemon")
    before = datetime.now(UTC)
    log.info("CHILD SA %s{%s} installed", "net", "site-b[3]", extra=child_fields(child, ike))
    log.debug("plain line with a \"quote\" and\na newline")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3                  # the newline inside the message stays inside its object
    first, second, third = (json.loads(line) for line in lines)
    assert first["event"] == "CHILD SA net{site-b[3]} installed"
    assert (first["level"], first["logger"]) == ("info", "ipsecgw.daemon")
    assert first["ike_sa"] == "site-b[3]" and first["conn"] == "site-b" and first["peer"] == "192.0.2.2"
    assert first["child"] == "net" and first["spi"] == "0xc1a2b3c4" and first["spi_out"] == "0x0000abcd"
    assert first["ike_spi"] == "0011223344556677"
    # RFC 3339 in UTC with fractional seconds
    assert first["ts"].endswith("Z") and "." in first["ts"]
    ts = datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert ts.tzinfo is not None and abs(ts - before) < timedelta(seconds=5)
    assert second["event"] == 'plain line with a "quote" and\na newline' and second["level"] == "debug"
    assert "child" not in second and "ike_sa" not in second
    assert third["level"] == "error" and "ValueError: boom" in third["exc"]


def test_text_lines_read_as_before(restore_logging: logging.Logger) -> None:
    out = io.StringIO()
    setup_logging("info", out)
    ike, _ = _entries()
    logging.getLogger("ipsecgw.daemon").info("IKE SA %s established", "site-b[3]", extra=ike_fields(ike))
    line = out.getvalue().rstrip("\n")
    assert line.endswith(" INFO    ipsecgw.daemon: IKE SA site-b[3] established")
    assert "192.0.2.2" not in line and "{" not in line


def test_set_format_switches_the_handlers(restore_logging: logging.Logger) -> None:
    out = io.StringIO()
    setup_logging("info", out, "text")
    set_format("json")
    logging.getLogger("ipsecgw.x").info("hello")
    assert json.loads(out.getvalue())["event"] == "hello"
    with pytest.raises(ValueError, match="yaml"):
        set_format("yaml")


def test_odd_field_values_do_not_lose_the_record(restore_logging: logging.Logger) -> None:
    out = io.StringIO()
    setup_logging("info", out, "json")
    logging.getLogger("ipsecgw.x").info("odd", extra={"peer": ("192.0.2.9", 4500), "child": None})
    obj = json.loads(out.getvalue())
    assert obj["peer"] == "('192.0.2.9', 4500)" and "child" not in obj


def test_config_log_format() -> None:
    assert parse_config(CONFIG.replace("EXTRA\n", ""), "gw.yaml").gateway.log_format == "text"
    assert parse_config(CONFIG.replace("EXTRA", "  log_format: JSON"), "gw.yaml").gateway.log_format == "json"
    with pytest.raises(ConfigError) as exc:
        parse_config(CONFIG.replace("EXTRA", "  log_format: yaml"), "gw.yaml")
    (msg,) = exc.value.problems
    assert msg.startswith("gw.yaml:4: gateway.log_format: expected one of text, json") and "'yaml'" in msg


@pytest.mark.parametrize("verb", ["run", "fastpath"])
def test_command_line_option(verb: str) -> None:
    args = build_parser(verb).parse_args([verb, "-c", "gw.yaml", "--log-format", "json"])
    assert args.log_format == "json"
    assert build_parser(verb).parse_args([verb, "-c", "gw.yaml"]).log_format is None
    with pytest.raises(SystemExit):
        build_parser(verb).parse_args([verb, "-c", "gw.yaml", "--log-format", "xml"])


def test_supervisor_passes_the_format_to_its_workers(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG.replace("EXTRA\n", ""), "gw.yaml")
    sup = Supervisor("gw.yaml", cfg, None, None, "json")
    for name in ("control", "fastpath"):
        argv = sup.workers[name].argv
        assert argv[argv.index("--log-format") + 1] == "json", argv
    assert sup.standby_argv is not None and "--log-format" in sup.standby_argv
    plain = Supervisor("gw.yaml", cfg)
    assert all("--log-format" not in w.argv for w in plain.workers.values())
    assert sys.executable in plain.workers["control"].argv[0]
