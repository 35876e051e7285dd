"""The responder gate in front of IKE state (control/responder_gate.py) as ``ipsecgw run`` builds it, no
sockets: COOKIEs past the threshold (accepted on return, the previous secret still accepted after a
rotation, a wrong one refused), the per-source and global half-open limits, requests that would be
refused anyway taking no half-open slot and counted by reason, no reply larger than its request to an
unverified source, the per-source limit keyed on the IPv4 address or the IPv6 /64, one owner each for the
hard limit and the half-open timeout (the core's timer, driven through the daemon's run_due: a slow peer's
slot freed, a cookie-verified abuser bounded then timed out), the cookie secret's lifetime as a parameter,
and the gateway section's fields for all of it."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from support.daemon_harness import gateway_yaml
from support.ike_messages import full_init, with_cookie
from support.intake_host import IntakeHost

from control.config import Config, ConfigError, load_config
from control.config.model import GatewayConfig
from control.ike.constants import Notify
from control.ike.events import State
from control.ike.message import Message
from control.ike_intake import IkeIntake
from control.ike_sa_table import IkeSaTable
from control.responder_gate import AdmissionGate, screen, source_of
from control.sa_records import IkeEntry
from control.verbs.running import format_status

LOCAL = "198.51.100.1"
PEER = ("198.51.100.2", 500)


def write_config(tmp_path: Path, extra: str = "", local: str = LOCAL) -> Path:
    cfg = tmp_path / "gw.yaml"
    text = gateway_yaml(shm=tmp_path / "gw.shm", sock=tmp_path / "gw.sock", ike_port=500, natt_port=4500,
                        local=f"'{local}'", remote="'%any'", remote_port=500, remote_natt_port=4500,
                        local_id="gw-a.example", remote_id="gw-b.example", local_ts="10.1.0.0/16",
                        remote_ts="10.2.0.0/16", start_action="none", export_keys=False)
    if extra:
        text = text.replace("gateway:\n", "gateway:\n" + extra, 1)
    cfg.write_text(text)
    return cfg


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path))


def daemon_like(config: Config, **gw) -> tuple[IkeIntake, IntakeHost, IkeSaTable, AdmissionGate]:
    for k, v in gw.items():
        setattr(config.gateway, k, v)
    gate = AdmissionGate.for_gateway(config.gateway)       # what Daemon (build_gateway) builds
    host, table = IntakeHost(), IkeSaTable()
    return IkeIntake(host, config, table, gate), host, table, gate


def peer(n: int) -> tuple[str, int]:
    return (f"203.0.113.{n}", 500)


def cookie_of(reply: bytes) -> bytes:
    (n,) = Message.parse(reply).notifies()
    assert n.notify_type == Notify.COOKIE
    return n.data


def test_defaults_are_the_documented_ones(config: Config) -> None:
    g = config.gateway
    assert (g.cookie_threshold, g.half_open_max, g.half_open_per_source, g.half_open_timeout) == (30, 1024, 5, 30)
    gate = AdmissionGate.for_gateway(g)
    assert gate.cookies is not None and gate.cookies.cookie_threshold == 30
    assert (gate.max_half_open, gate.per_source, gate.half_open_timeout) == (1024, 5, 30.0)
    conn = next(iter(config.connections.values()))
    assert conn.ike_config(g, local_ip=LOCAL).half_open_timeout == 30.0


def test_config_fields_are_read(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "  cookie_threshold: 0\n  half_open_max: 200\n"
                                             "  half_open_per_source: 3\n  half_open_timeout: 1m\n"))
    g = cfg.gateway
    assert (g.cookie_threshold, g.half_open_max, g.half_open_per_source, g.half_open_timeout) == (0, 200, 3, 60)
    conn = next(iter(cfg.connections.values()))
    assert conn.ike_config(g, local_ip=LOCAL).half_open_timeout == 60.0


@pytest.mark.parametrize(("extra", "field", "expected"), [
    ("  cookie_threshold: -1\n", "gateway.cookie_threshold", "an integer from 0 (always) to half_open_max"),
    ("  cookie_threshold: 2000\n", "gateway.cookie_threshold", "to half_open_max (1024)"),
    ("  half_open_max: 0\n", "gateway.half_open_max", "an integer from 1 to 1048576"),
    ("  half_open_max: lots\n", "gateway.half_open_max", "an integer from 1 to 1048576"),
    ("  half_open_per_source: 0\n", "gateway.half_open_per_source", "an integer from 1 to half_open_max"),
    ("  half_open_max: 10\n  half_open_per_source: 11\n", "gateway.half_open_per_source",
     "to half_open_max (10)"),
    ("  half_open_timeout: 2h\n", "gateway.half_open_timeout", "a duration from 1s to 1h"),
    ("  half_open_timeout: soon\n", "gateway.half_open_timeout", "a duration"),
])
def test_config_errors_name_file_line_field_and_expectation(tmp_path: Path, extra: str, field: str,
                                                            expected: str) -> None:
    path = write_config(tmp_path, extra)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    key = field.split(".")[1]
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith(key + ":"))
    assert f"gw.yaml:{line}: {field}: expected" in msg and expected in msg, msg


def test_cookie_past_threshold_accepted_on_return(config: Config) -> None:
    it, host, table, gate = daemon_like(config, cookie_threshold=2)
    for n in (1, 2):
        it.received(full_init(), LOCAL, 500, peer(n))
    assert len(table) == 2 and not host.sent
    req = full_init()
    it.received(req, LOCAL, 500, PEER)
    assert len(table) == 2 and len(gate) == 2          # no state for the challenged request
    (reply,) = host.sent
    assert reply.remote == PEER and len(reply.data) <= len(req)
    it.received(with_cookie(req, cookie_of(reply.data)), LOCAL, 500, PEER)
    assert len(table) == 3 and len(gate) == 3
    assert gate.stats == {"cookie_sent": 1, "cookie_accepted": 1}
    assert host.counts == {"cookie_gate": 1}           # a verified request is let in, not refused


def test_admission_says_whether_the_source_was_verified(config: Config) -> None:
    gate = AdmissionGate.for_gateway(config.gateway)
    gate.cookies.cookie_threshold = 0
    req = full_init()
    challenged = gate.admit(req, 500, PEER, 100.0)
    assert (challenged.let_in, challenged.refused, challenged.verified) == (False, "cookie_gate", False)
    back = gate.admit(with_cookie(req, cookie_of(challenged.reply.data)), 500, PEER, 100.0)
    assert (back.let_in, back.refused, back.verified) == (True, None, True)
    gate.cookies.cookie_threshold = 30
    plain = gate.admit(full_init(), 500, PEER, 100.0)
    assert (plain.let_in, plain.refused, plain.verified) == (True, None, False)


def test_previous_secret_still_accepted_after_rotation_then_refused(config: Config) -> None:
    it, host, table, gate = daemon_like(config, cookie_threshold=0)
    req = full_init()
    it.received(req, LOCAL, 500, PEER)
    cookie = cookie_of(host.sent[0].data)
    host.t += gate.cookies.secret_lifetime              # one rotation: the previous secret still counts
    it.received(with_cookie(req, cookie), LOCAL, 500, PEER)
    assert len(table) == 1 and gate.stats["cookie_accepted"] == 1
    req2 = full_init()
    it.received(req2, LOCAL, 500, peer(7))
    old = cookie_of(host.sent[-1].data)
    host.t += 2 * gate.cookies.secret_lifetime          # two rotations: that secret is gone
    it.received(with_cookie(req2, old), LOCAL, 500, peer(7))
    assert len(table) == 1 and gate.stats["cookie_invalid"] == 1
    assert cookie_of(host.sent[-1].data) != old         # a fresh challenge instead


@pytest.mark.parametrize("lifetime", [7.5, 300.0])
def test_secret_lifetime_is_the_gates_parameter(config: Config, lifetime: float) -> None:
    """A cookie made just before a rotation is good until the end of the next lifetime, not after."""
    gate = AdmissionGate.for_gateway(config.gateway, secret_lifetime=lifetime)
    gate.cookies.cookie_threshold = 0
    made = 3 * lifetime - 0.25                          # a quarter second before the secret changes
    req = full_init()
    cookie = cookie_of(gate.admit(req, 500, PEER, made).reply.data)
    retried = with_cookie(req, cookie)
    assert gate.admit(retried, 500, PEER, made + 0.5).let_in                  # the previous secret now
    assert gate.admit(retried, 500, PEER, 4 * lifetime - 0.01).let_in
    late = gate.admit(retried, 500, PEER, 4 * lifetime)                       # two rotations on: gone
    assert not late.let_in and gate.stats["cookie_invalid"] == 1
    with pytest.raises(ValueError, match="secret_lifetime"):
        AdmissionGate.for_gateway(config.gateway, secret_lifetime=0)


def test_wrong_cookie_refused(config: Config) -> None:
    it, host, table, gate = daemon_like(config, cookie_threshold=0)
    req = full_init()
    it.received(req, LOCAL, 500, PEER)
    good = cookie_of(host.sent[0].data)
    for bad in (good[:1] + bytes(16), good[:-1] + bytes([good[-1] ^ 1]), good[:5], b""):
        it.received(with_cookie(req, bad), LOCAL, 500, PEER)
    it.received(with_cookie(req, good), LOCAL, 500, peer(9))   # another address: the cookie binds IPi
    assert len(table) == 0 and gate.stats["cookie_invalid"] == 5
    it.received(with_cookie(req, good), LOCAL, 500, PEER)
    assert len(table) == 1


def test_per_source_limit(config: Config) -> None:
    it, host, table, gate = daemon_like(config, half_open_per_source=3, cookie_threshold=100)
    for _ in range(3):
        it.received(full_init(), LOCAL, 500, PEER)
    assert len(table) == 3 and gate.from_source(PEER[0]) == 3 and not host.sent
    req = full_init()
    it.received(req, LOCAL, 500, PEER)          # at its limit, well below the global threshold: a COOKIE
    assert len(table) == 3 and gate.stats == {"cookie_sent": 1}
    it.received(full_init(), LOCAL, 500, peer(1))               # other addresses are not held back
    assert len(table) == 4
    gate.closed(table.values()[0].spi)                          # one completes or times out: room again
    it.received(full_init(), LOCAL, 500, PEER)
    assert len(table) == 5 and gate.from_source(PEER[0]) == 3


def test_spoofed_requests_in_a_peers_name_do_not_lock_it_out(config: Config) -> None:
    """Below the cookie threshold a spoofer fills the peer's per-source slots; the real peer, which sees
    the COOKIE, still gets in, and its own cookie-verified half-open SAs are bounded by the same limit."""
    it, host, table, gate = daemon_like(config, half_open_per_source=5, cookie_threshold=100)
    for _ in range(50):                                         # spoofed: the COOKIEs go nowhere
        it.received(full_init(), LOCAL, 500, PEER)
    assert gate.from_source(PEER[0]) == 5 and gate.stats["cookie_sent"] == 45
    for _ in range(7):                                          # the real address returns its cookies
        req = full_init()
        it.received(req, LOCAL, 500, PEER)
        it.received(with_cookie(req, cookie_of(host.sent[-1].data)), LOCAL, 500, PEER)
    assert gate.stats["cookie_accepted"] == 7 and gate.stats["half_open_per_source"] == 2
    assert gate.from_source(PEER[0]) == 10 and len(table) == 10
    assert host.counts["half_open_per_source"] == 2


class TimerDaemon:
    """What run_due needs of the daemon, doing what Daemon does with a dead entry (_reconcile_entry ->
    drop_entry -> gate.closed, timed_out read from the core's counter)."""

    def __init__(self, table: IkeSaTable, gate: AdmissionGate):
        self.table, self.gate, self.dropped = table, gate, []
        self.children: list = []            # stands in for the ChildInstaller: no CHILD SAs here

    def process(self, e: IkeEntry) -> None:
        if e.ike.state == State.DEAD and self.table.pop(e.spi) is not None:
            self.gate.closed(e.spi, timed_out=bool(e.ike.stats.get("half_open_timeout")))
            self.dropped.append(e)

    def drop_entry(self, e: IkeEntry, reason: str) -> None:
        raise AssertionError(f"the core, not the daemon's timers, ends a half-open SA ({reason})")


def test_slow_peer_half_open_sa_times_out_and_frees_its_slot(tmp_path: Path) -> None:
    """A real address that answers our IKE_SA_INIT response with nothing: the core's timer ends its SA at
    half_open_timeout (not before), the slot is free again, and the gate counts the timeout."""
    from control.sa_timers import deadlines, run_due

    cfg = load_config(write_config(tmp_path, "  half_open_per_source: 1\n  half_open_timeout: 5s\n"))
    it, host, table, gate = daemon_like(cfg)
    it.received(full_init(), LOCAL, 500, PEER)                  # answered, but no IKE_AUTH ever follows
    assert len(table) == 1 and gate.from_source(PEER[0]) == 1
    (entry,) = table.values()
    assert min(deadlines(table, [])) == host.t + 5.0
    d = TimerDaemon(table, gate)
    run_due(d, table, d, host.t + 4.9)                          # type: ignore[arg-type]
    it.received(full_init(), LOCAL, 500, PEER)                  # the slot is still held: a COOKIE instead
    assert len(table) == 1 and gate.stats["cookie_sent"] == 1
    run_due(d, table, d, host.t + 5.0)                          # type: ignore[arg-type]
    assert d.dropped == [entry] and entry.ike.state == State.DEAD
    assert len(table) == 0 and len(gate) == 0 and gate.from_source(PEER[0]) == 0
    assert gate.stats["half_open_timeout"] == 1 and gate.status()["counters"]["half_open_timeout"] == 1
    it.received(full_init(), LOCAL, 500, PEER)
    assert len(table) == 1


def test_many_verified_half_open_sas_from_one_address_each_time_out(tmp_path: Path) -> None:
    """IKE_AUTH-stage abuse from a real address: it returns every COOKIE and never sends IKE_AUTH.  It
    holds at most half_open_per_source verified SAs; at the timeout all of them go, and it may start again."""
    from control.sa_timers import run_due

    cfg = load_config(write_config(tmp_path, "  half_open_per_source: 3\n  half_open_timeout: 5s\n"
                                             "  cookie_threshold: 0\n"))
    it, host, table, gate = daemon_like(cfg)
    for _ in range(10):
        req = full_init()
        it.received(req, LOCAL, 500, PEER)
        it.received(with_cookie(req, cookie_of(host.sent[-1].data)), LOCAL, 500, PEER)
    assert len(table) == 3 and gate.from_source(PEER[0]) == 3
    assert gate.stats["cookie_accepted"] == 10 and gate.stats["half_open_per_source"] == 7
    req = full_init()
    it.received(req, LOCAL, 500, peer(1))                       # another peer is not held back
    it.received(with_cookie(req, cookie_of(host.sent[-1].data)), LOCAL, 500, peer(1))
    assert len(table) == 4
    d = TimerDaemon(table, gate)
    run_due(d, table, d, host.t + 5.0)                          # type: ignore[arg-type]
    assert len(table) == 0 and gate.stats["half_open_timeout"] == 4 and gate.from_source(PEER[0]) == 0


def test_per_source_limit_applies_after_the_cookie(config: Config) -> None:
    it, host, table, gate = daemon_like(config, half_open_per_source=1, cookie_threshold=0)
    for _ in range(3):
        req = full_init()
        it.received(req, LOCAL, 500, PEER)
        it.received(with_cookie(req, cookie_of(host.sent[-1].data)), LOCAL, 500, PEER)
    assert len(table) == 1 and gate.stats["cookie_accepted"] == 3 and gate.stats["half_open_per_source"] == 2


def test_global_limit_drops_before_any_state_or_reply(config: Config) -> None:
    it, host, table, gate = daemon_like(config, half_open_max=4, cookie_threshold=4, half_open_per_source=4)
    for n in range(10):
        it.received(full_init(), LOCAL, 500, peer(n))
    assert len(table) == 4 and len(gate) == 4
    assert gate.stats == {"half_open_full": 6} and not host.sent


def test_the_hard_limit_has_one_owner(config: Config) -> None:
    """The daemon's cookie gate keeps no hard limit of its own: at half_open_max verified requests too
    are dropped by the AdmissionGate's step 2, counted as half_open_full only."""
    it, host, table, gate = daemon_like(config, half_open_max=3, cookie_threshold=0, half_open_per_source=3)
    assert gate.cookies is not None and gate.cookies.max_half_open is None
    for n in range(5):
        req = full_init()
        it.received(req, LOCAL, 500, peer(n))
        if len(table) < 3:
            it.received(with_cookie(req, cookie_of(host.sent[-1].data)), LOCAL, 500, peer(n))
    assert len(table) == 3 and gate.stats["half_open_full"] == 2 and "half_open_limit" not in gate.stats


@pytest.mark.parametrize(("mangle", "reason"), [
    (lambda r: r[:17] + bytes([0x30]) + r[18:], "init_bad_version"),           # major version 3
    (lambda r: r[:-1], "init_bad_chain"),                                       # header length says more
    (lambda r: r[:28] + r[28:30] + b"\x00\x03" + r[32:], "init_bad_chain"),     # a payload length below 4
    (lambda r: r[:28] + r[28:30] + b"\xff\xff" + r[32:], "init_bad_chain"),     # one past the end
    (lambda r: r[:16] + bytes([40]) + r[17:], "init_missing_payload"),          # the chain skips SA, KE
    (lambda r: r[:24] + struct.pack("!I", 28) + b"", "init_bad_chain"),
])
def test_requests_refused_anyway_take_no_slot_and_are_counted(config: Config, mangle, reason: str) -> None:
    it, host, table, gate = daemon_like(config)
    bad = mangle(full_init())
    assert screen(bad) == reason
    for _ in range(3):
        it.received(bad, LOCAL, 500, PEER)
    assert len(table) == 0 and len(gate) == 0
    assert gate.stats[reason] == 3 and host.counts[reason] == 3
    for d in host.sent:                                         # only a version answer, never larger
        assert len(d.data) <= len(bad)


def test_request_whose_payload_body_does_not_decode_takes_no_state(config: Config) -> None:
    """A sound chain with a broken SA body (the first transform's last-substructure byte 1: RFC 7296 §3.3.2
    allows 0 or 3) passes the shape check but not the decode: no IKE SA, no slot, no reply, counted once."""
    req = bytearray(full_init())
    assert req[16] == 33 and req[40] == 3           # SA first; proposal header at 32, its first transform at 40
    req[40] = 1
    bad = bytes(req)
    assert screen(bad) is None
    it, host, table, gate = daemon_like(config)
    for _ in range(3):
        it.received(bad, LOCAL, 500, PEER)
    assert len(table) == 0 and len(gate) == 0 and not host.sent
    assert gate.stats["init_malformed"] == 3 and host.counts["init_malformed"] == 3
    it.received(full_init(), LOCAL, 500, PEER)      # a sound request from the same source still gets in
    assert len(table) == 1


def test_no_connection_takes_no_slot(config: Config) -> None:
    it, host, table, gate = daemon_like(config)
    it.received(full_init(), "192.0.2.99", 500, PEER)           # no connection has this local address
    assert len(table) == 0 and len(gate) == 0 and host.counts["no_connection"] == 1 and not host.sent


def test_reply_never_larger_than_the_request(config: Config) -> None:
    it, host, table, gate = daemon_like(config, cookie_threshold=0)
    short_v3 = bytes(8) * 2 + bytes([0, 0x30, 34, 0x08]) + bytes(4) + struct.pack("!I", 28)
    it.received(short_v3, LOCAL, 500, PEER)                     # 36-byte INVALID_MAJOR_VERSION > 28: withheld
    assert not host.sent and gate.stats["reply_too_large"] == 1
    padded_v3 = short_v3[:24] + struct.pack("!I", 60) + bytes(32)
    it.received(padded_v3, LOCAL, 500, PEER)
    (v,) = host.sent
    assert len(v.data) <= len(padded_v3)
    (n,) = Message.parse(v.data).notifies()
    assert n.notify_type == Notify.INVALID_MAJOR_VERSION
    for _ in range(20):
        req = full_init()
        it.received(req, LOCAL, 500, PEER)
        assert len(host.sent[-1].data) <= len(req)
    gate.cookies.cookie_threshold = 0
    req = full_init()
    it.received(req, LOCAL, 4500, PEER)                         # NAT-T port: marker counted on both sides
    it.received(b"\0\0\0\0" + req, LOCAL, 4500, PEER)
    assert len(host.sent[-1].data) <= len(req) + 4 and host.sent[-1].data[:4] == bytes(4)


def test_status_shows_the_gate(config: Config) -> None:
    it, host, table, gate = daemon_like(config, cookie_threshold=1)
    it.received(full_init(), LOCAL, 500, PEER)
    it.received(full_init(), LOCAL, 500, peer(3))
    it.received(full_init()[:-2], LOCAL, 500, peer(4))
    st = {"ike_sas": 1, "child_sas": 0, "policies": 0, "admission": gate.status(), "counters": host.counts}
    a = st["admission"]
    assert a["half_open"] == 1 and a["counters"] == {"cookie_sent": 1, "init_bad_chain": 1}
    text = format_status(st)
    assert "IKE_SA_INIT gate: 1 half-open (limit 1024, 5 per source" in text
    assert "cookie_sent 1" in text and "init_bad_chain 1" in text


def test_gateway_config_is_a_plain_dataclass() -> None:
    assert GatewayConfig().half_open_per_source == 5


LOCAL6 = "2001:db8:ffff::1"


@pytest.mark.parametrize(("ip", "source"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),                    # IPv4 on a dual-stack socket: the address
    ("fe80::1%veth0", "fe80::/64"),
])
def test_source_of_keys_ipv4_by_address_and_ipv6_by_its_64(ip: str, source: str) -> None:
    assert source_of(ip) == source


def test_per_source_limit_counts_an_ipv6_64_as_one_source(tmp_path: Path) -> None:
    """Anyone with a /64 has 2^64 addresses: five half-open SAs from five of them fill the /64's share,
    the sixth address of that /64 must return a COOKIE, while the next /64 over is not held back."""
    cfg = load_config(write_config(tmp_path, "  half_open_per_source: 5\n", local=LOCAL6))
    it, host, table, gate = daemon_like(cfg)
    for n in range(1, 6):
        it.received(full_init(responder=LOCAL6), LOCAL6, 500, (f"2001:db8:1:2::{n:x}", 500))
    assert len(table) == 5 and not host.sent and gate.from_source("2001:db8:1:2:ffff::9") == 5
    req = full_init(responder=LOCAL6)
    it.received(req, LOCAL6, 500, ("2001:db8:1:2:ffff::9", 500))
    assert len(table) == 5 and gate.stats == {"cookie_sent": 1}
    it.received(full_init(responder=LOCAL6), LOCAL6, 500, ("2001:db8:1:3::1", 500))
    assert len(table) == 6 and gate.status()["busiest_source"] == 5
    for _ in range(10):                         # the /64's owner returns its cookies: still bounded by 5
        r = full_init(responder=LOCAL6)
        src = (f"2001:db8:1:2::{random.getrandbits(16):x}:1", 500)
        it.received(r, LOCAL6, 500, src)
        it.received(with_cookie(r, cookie_of(host.sent[-1].data)), LOCAL6, 500, src)
    assert gate.stats["cookie_accepted"] == 10 and gate.stats["half_open_per_source"] == 5
    assert gate.from_source("2001:db8:1:2::1") == 10 and len(table) == 11
    gate.closed(table.values()[0].spi)
    assert gate.from_source("2001:db8:1:2::1") == 9


def test_per_source_limit_counts_ipv4_addresses_apart(config: Config) -> None:
    it, host, table, gate = daemon_like(config, half_open_per_source=1)
    for n in range(1, 6):
        it.received(full_init(), LOCAL, 500, (f"203.0.113.{n}", 500))     # same /24, five sources
    assert len(table) == 5 and not host.sent and gate.status()["busiest_source"] == 1
