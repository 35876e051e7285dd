"""The explained failures against a live strongSwan 5.9.8 in network namespaces.

Per failure (mismatched proposals, disjoint traffic selectors, an identity the other side does not
expect) charon initiates first: our daemon, the responder, must log both sides in strongSwan's own
keywords; then ours initiates with ``ipsecgw initiate``: it must exit 1 naming the notify charon sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.daemon_harness import ROOT, DaemonProc, gateway_yaml
from support.strongswan import Charon, NetnsPair, interop_marks, swanctl_conf

pytestmark = interop_marks()

PSK = "explain-interop-psk-0123456789"
OUR_TS, THEIR_TS = "10.1.0.0/16", "10.2.0.0/16"
OURS_IKE = "aes128gcm16-prfsha256-x25519"

# case: (charon's settings, the notify, what our responder log must say, what our initiate must print)
CASES = {
    "proposals": (dict(ike="aes256gcm16-prfsha384-ecp384"), "NO_PROPOSAL_CHOSEN",
                  ["our IKE proposals:   aes128gcm16-prfsha256-x25519",
                   "their IKE proposals: aes256gcm16-prfsha384-ecp384",
                   "DH group: ours x25519, theirs ecp384"],
                  ["we offered IKE proposals: aes128gcm16-prfsha256-x25519"]),
    "ts": (dict(remote_ts="10.9.0.0/16"), "TS_UNACCEPTABLE",
           ["their TSi (their side): 10.2.0.0/16", "their TSr (our side):   10.9.0.0/16",
            "TSr with our local:  empty (the addresses do not overlap)"],
           ["TSi (our side) 10.1.0.0/16, TSr (their side) 10.2.0.0/16"]),
    "identity": (dict(local_id="gw-x.example"), "AUTHENTICATION_FAILED",
                 ["check failed: identity mismatch", "presented identity: FQDN gw-x.example",
                  "expected identity:  FQDN gw-b.example"],
                 ["we presented identity FQDN gw-a.example, auth psk"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_failure_explained_against_charon(tmp_path: Path, case: str) -> None:
    theirs, notify, responder_words, initiator_words = CASES[case]
    conf = dict(local_id="gw-b.example", remote_id="gw-a.example", ike=OURS_IKE, esp="aes128gcm16",
                local_ts=THEIR_TS, remote_ts=OUR_TS) | theirs
    tag = f"exS{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        net.add_lo_address(net.b, "10.2.0.1/32")       # charon wants an address inside its local_ts
        charon = Charon(net.b, swanctl_conf(local=net.b_ip, remote=net.a_ip, psk=PSK, **conf))
        shm, sock, cfg = tmp_path / "gw.shm", tmp_path / "gw.sock", tmp_path / "gw.yaml"
        cfg.write_text(gateway_yaml(shm=shm, sock=sock, ike_port=500, natt_port=4500, local=net.a_ip,
                                    remote=net.b_ip, remote_port=500, remote_natt_port=4500,
                                    local_id="gw-a.example", remote_id="gw-b.example", local_ts=OUR_TS,
                                    remote_ts=THEIR_TS, start_action="none", psk=PSK, ike=OURS_IKE))
        daemon = None
        try:
            charon.start()
            daemon = DaemonProc(cfg, sock, shm, netns=net.a)
            # 1. charon initiates and fails; ours, the responder, explains why
            with pytest.raises(RuntimeError):
                charon.swanctl("--initiate", "--child", "net", "--timeout", "10", timeout=30)
            log = daemon.log_text()
            for words in responder_words:
                assert words in log, f"{words!r} not in our log:\n{log[-4000:]}\ncharon:\n{charon.log_text()[-3000:]}"
            assert f"failed: {notify} sent to the peer" in log
            # 2. ours initiates; charon refuses with the notify, which `ipsecgw initiate` names
            out = subprocess.run([sys.executable, "-m", "control.cli", "initiate", "peer", "--socket", str(sock),
                                  "--timeout", "15"], cwd=ROOT, capture_output=True, text=True, timeout=60)
            first = out.stdout.splitlines()[0] if out.stdout else ""
            assert out.returncode == 1, out.stdout + out.stderr
            assert first.startswith(f"peer: failed: {notify} from {net.b_ip}"), \
                f"{out.stdout}\ncharon:\n{charon.log_text()[-3000:]}"
            for words in initiator_words:
                assert words in out.stdout
        finally:
            if daemon is not None:
                daemon.stop()
            charon.stop()
    assert PSK not in log
