"""Fuzz target: a new IKE_SA_INIT request into the daemon's responder path, before and as state is made.

An input is ``ctl || datagram``.  The datagram goes into ``IkeIntake.received`` (control/ike_intake.py,
the one UDP path of ``ipsecgw run``) with a fresh ``AdmissionGate`` (control/responder_gate.py; with
the COOKIE gate of control/ike/cookie.py in front when ``ctl`` bit 1 says so, its threshold at 0) and a
fresh SA table, on port 500 or (bit 0) behind the non-ESP marker on 4500.  When the gate lets it in,
the ``IkeSA`` it made parses it and answers.

Oracle: nothing raises; the request gets a reply or a counted drop (a datagram sent, a counter of the
intake or of the IKE SA moved); and a request ``Message.parse`` refuses leaves no IKE SA behind at all
(issue 15: an unparseable request takes no state; the gate's last step, ``decodes``, refuses it).

Seeds: real IKE_SA_INIT requests of our initiator core (tests/support/ike_messages.py), with and
without a COOKIE, bare ones, on both ports.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import atheris
from support.daemon_harness import gateway_yaml
from support.ike_messages import full_init, init_request, with_cookie
from support.intake_host import IntakeHost

from control.config import load_config
from control.ike.constants import NON_ESP_MARKER
from control.ike.cookie import ResponderGate
from control.ike.events import State
from control.ike_intake import IkeIntake
from control.ike_sa_table import IkeSaTable
from control.responder_gate import AdmissionGate, decodes
from fuzz import ike_chain
from fuzz.harness import FuzzFailure

LOCAL, PEER = "198.51.100.1", "198.51.100.2"


def _config():
    with tempfile.TemporaryDirectory(prefix="fuzz-responder-") as tmp:
        t = Path(tmp)
        cfg = t / "gw.yaml"
        cfg.write_text(gateway_yaml(shm=t / "gw.shm", sock=t / "gw.sock", ike_port=500, natt_port=4500, local=LOCAL,
                                    remote=PEER, remote_port=500, remote_natt_port=4500, local_id="gw-a.example",
                                    remote_id="gw-b.example", local_ts="10.1.0.0/16", remote_ts="10.2.0.0/16",
                                    start_action="none", export_keys=False))
        return load_config(cfg)


CONFIG = _config()


def one_input(data: bytes) -> None:
    if not data:
        return
    ctl, msg = data[0], data[1:]
    natt = bool(ctl & 1)
    port = 4500 if natt else 500
    gate = AdmissionGate(cookies=ResponderGate(cookie_threshold=0)) if ctl & 2 else AdmissionGate()
    host, table = IntakeHost(), IkeSaTable()
    intake = IkeIntake(host, CONFIG, table, gate)
    intake.received((NON_ESP_MARKER if natt else b"") + msg, LOCAL, port, (PEER, port))
    answered = bool(host.sent) or bool(host.counts)
    for entry in table.values():
        ike = entry.ike
        out = ike.datagrams_to_send()
        answered = answered or bool(out) or any(ike.stats.values()) or ike.state == State.DEAD
        if not decodes(msg):
            raise FuzzFailure(f"an unparseable request made an IKE SA (state {ike.state.name})")
    if not answered:
        raise FuzzFailure(f"a {len(msg)}-byte request got neither a reply nor a counted drop: {msg[:40].hex()}")


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if len(data) < 2 or rng.randrange(40) == 0:
        return atheris.Mutate(data, max_size)
    ctl = data[0]
    if rng.randrange(8) == 0:
        ctl = rng.randrange(4)
    return bytes([ctl]) + ike_chain.mutate_message(data[1:], max(1, max_size - 1), rng)


def seeds() -> list[bytes]:
    rng = random.Random(15)
    reqs = [full_init(rng.randbytes(8), responder=LOCAL) for _ in range(2)]
    reqs.append(with_cookie(reqs[0], rng.randbytes(20)))
    reqs.append(init_request(spi=rng.randbytes(8), nonce=rng.randbytes(32)))
    reqs.append(init_request(spi=rng.randbytes(8), cookie=rng.randbytes(16), nonce=rng.randbytes(32)))
    return [bytes([ctl]) + r for r in reqs for ctl in range(4)]
