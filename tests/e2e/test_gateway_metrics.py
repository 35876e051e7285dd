"""The Prometheus endpoint on a real gateway pair: hostA - gwA === gwB - hostB in network namespaces (our
control and fastpath on each gateway, plain ESP, AES-GCM), gateway A serving ``gateway.metrics.listen``.

- /metrics parses with prometheus-client's own parser, each family with its HELP and TYPE;
- the per-SA packet and byte counters equal ``list-sas``'s for the same SPIs, read at a quiet moment, and
  rise with a ping burst; the SA and IKE message families agree with ``status``;
- a CHILD SA whose proposal the peer refuses counts once under ``NO_PROPOSAL_CHOSEN``, as in ``status``;
- ``ipsecgw_drops_total{dir="in",reason="no-sa"}`` rises by exactly the ESP packets with unknown SPIs sent at
  the gateway;
- 200 scrapes in 10 s while pings flow at 100 a second all answer 200 and parse, and the pings get through
  as well as the same stream does without scrapes.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.daemon_harness import DaemonProc, SplitGateways, installed_child
from support.netns_tools import Topology, gateway_config
from support.strongswan import in_netns

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")]

FAMILIES = {"ipsecgw_ike_sas": "gauge", "ipsecgw_child_sas": "gauge", "ipsecgw_sa_packets": "counter",
            "ipsecgw_sa_bytes": "counter", "ipsecgw_drops": "counter", "ipsecgw_ike_messages": "counter",
            "ipsecgw_negotiation_failures": "counter", "ipsecgw_fastpath_up": "gauge", "ipsecgw_info": "gauge",
            "process_resident_memory_bytes": "gauge", "process_cpu_seconds": "counter"}


# a child of A's connection whose ESP proposal gateway B does not accept: asked for, it fails with
# NO_PROPOSAL_CHOSEN (narrower selectors than net's and no trap, so the SPD is not touched)
BAD_CHILD = """      bad:
        local_ts: [10.1.0.0/25]
        remote_ts: [10.2.0.0/25]
        esp_proposals: [aes256-sha512]
        start_action: none
"""


def _get(port: int) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.status, r.read().decode()


class Scraper:
    """GETs gateway A's /metrics from inside its namespace (the endpoint listens on its loopback)."""

    def __init__(self, ns: str, port: int):
        self.ns, self.port = ns, port

    def text(self) -> str:
        status, body = in_netns(self.ns, lambda: _get(self.port))        # type: ignore[misc]
        assert status == 200
        return body

    def families(self) -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(self.text())}

    def sa_counters(self) -> dict[tuple[str, str, str], dict[str, int]]:
        """(child, spi, dir) -> {"packets", "bytes"}."""
        fams = self.families()
        out: dict[tuple[str, str, str], dict[str, int]] = {}
        for what in ("packets", "bytes"):
            for s in fams[f"ipsecgw_sa_{what}"].samples:
                if s.name.endswith("_total"):
                    key = (s.labels["child"], s.labels["spi"], s.labels["dir"])
                    out.setdefault(key, {})[what] = int(s.value)
        return out

    def value(self, family: str, **labels: str) -> float:
        fam = self.families()[family]
        want = fam.name + ("_total" if fam.type == "counter" else "")
        return sum(s.value for s in fam.samples if s.name == want and labels.items() <= s.labels.items())


def _listed(ctl: DaemonProc) -> dict[tuple[str, str, str], dict[str, int]]:
    """list-sas's counters in the same shape as ``Scraper.sa_counters``."""
    out = {}
    for ike in ctl.call("list-sas"):
        for c in ike.get("children", []):
            for d, spi in (("in", c["spi_in"]), ("out", c["spi_out"])):
                got = (c.get("counters") or {}).get(d)
                if got is not None:
                    out[(c["name"], f"0x{spi}", d)] = {"packets": got["packets"], "bytes": got["bytes"]}
    return out


def _quiet_read(scr: Scraper, ctl: DaemonProc) -> tuple[dict, dict]:
    """Both views at a moment when nothing moves: the same scrape before and after list-sas."""
    for _ in range(20):
        a = scr.sa_counters()
        listed = _listed(ctl)
        if scr.sa_counters() == a:
            return a, listed
        time.sleep(0.3)
    raise AssertionError("the SA counters never stood still")


def _garbage_esp(ns: str, src: str, dst: str, count: int) -> int:
    """count ESP packets whose SPIs no SA has, with plausible sizes, from namespace ns."""
    def send() -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
        for i in range(count):
            s.sendto(struct.pack("!II", 0x0BAD0000 + i, 1) + os.urandom(64), (dst, 0))
        s.close()
        return count
    return in_netns(ns, send)      # type: ignore[return-value]


def test_metrics_endpoint_on_a_gateway_pair(tmp_path: Path) -> None:
    tag = f"gm{os.getpid() % 10000}"
    port = 9700 + os.getpid() % 200
    with Topology(tag) as net:
        a = gateway_config(tmp_path, "A", encap=False, log_level="info")
        b = gateway_config(tmp_path, "B", encap=False, log_level="info")
        cfg_a = a[0]
        listen = f"gateway:\n  metrics: {{listen: '127.0.0.1:{port}'}}\n"
        cfg_a.write_text(cfg_a.read_text().replace("gateway:\n", listen, 1).replace("secrets:", BAD_CHILD + "secrets:"))
        with SplitGateways(net, a, b, tmp_path) as gws:
            ctl_a, fp_a = gws.ctl_a, gws.fp_a
            scr = Scraper(net.gA, port)
            assert net.ping(5, 0.2)["got"], fp_a.text()          # trap: the first ping brings the SA up
            ctl_a.wait_for(installed_child)

            # 1. the exposition parses; every family has HELP and TYPE and the type it should
            text = scr.text()
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            for name, typ in FAMILIES.items():
                assert fams[name].type == typ, (name, fams.get(name))
                exposed = name + ("_total" if typ == "counter" else "")
                assert f"# TYPE {exposed} {typ}" in text and f"# HELP {exposed} " in text, name
            assert scr.value("ipsecgw_fastpath_up") == 1
            assert scr.value("ipsecgw_ike_sas", state="ESTABLISHED") == 1
            assert scr.value("ipsecgw_child_sas") == ctl_a.call("status")["child_sas"] >= 1

            # 2. per-SA counters equal list-sas's for the same SPIs, then rise with a ping burst
            m0, listed0 = _quiet_read(scr, ctl_a)
            assert m0 == listed0 and m0, (m0, listed0)
            assert {d for _, spi, d in m0} == {"in", "out"}
            assert all(spi.startswith("0x") and len(spi) == 10 for _, spi, _ in m0)
            assert len(net.ping(40, 0.01, size=500)["got"]) == 40
            m1, listed1 = _quiet_read(scr, ctl_a)
            assert m1 == listed1
            for key, before in m0.items():
                assert m1[key]["packets"] - before["packets"] >= 40, (key, before, m1[key])
                assert m1[key]["bytes"] - before["bytes"] >= 40 * 528, (key, before, m1[key])
            ike = ctl_a.call("status")["ike"]
            assert scr.value("ipsecgw_ike_messages", exchange="IKE_SA_INIT", dir="out") == \
                ike["messages"]["out"]["IKE_SA_INIT"] >= 1
            assert scr.value("ipsecgw_ike_messages", exchange="IKE_AUTH", dir="in") >= 1

            # 3. a failed negotiation is counted by its notify, as status --json counts it
            failed0 = scr.value("ipsecgw_negotiation_failures")
            cc0 = scr.value("ipsecgw_ike_messages", exchange="CREATE_CHILD_SA", dir="out")
            ctl_a.call("initiate", name="bad")
            deadline = time.monotonic() + 10
            while scr.value("ipsecgw_negotiation_failures") == failed0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert scr.value("ipsecgw_negotiation_failures") - failed0 == 1, ctl_a.log_text()[-3000:]
            assert scr.value("ipsecgw_negotiation_failures", reason="NO_PROPOSAL_CHOSEN") == 1
            assert ctl_a.call("status")["ike"]["negotiation_failures"] == {"NO_PROPOSAL_CHOSEN": 1}
            # the responder counts its refusal too
            assert gws.ctl_b.call("status")["ike"]["negotiation_failures"] == {"NO_PROPOSAL_CHOSEN": 1}
            assert scr.value("ipsecgw_ike_messages", exchange="CREATE_CHILD_SA", dir="out") - cc0 >= 1
            assert installed_child(ctl_a.call("list-sas"))          # the IKE SA and net live on

            # 4. garbage ESP at the gateway: counted drops with their reason (the totals are written twice a second)
            no_sa0 = scr.value("ipsecgw_drops", dir="in", reason="no-sa")
            sent = _garbage_esp(net.gB, "192.0.2.2", "192.0.2.1", 25)
            deadline = time.monotonic() + 5
            while scr.value("ipsecgw_drops", dir="in", reason="no-sa") - no_sa0 < sent and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.7)
            assert scr.value("ipsecgw_drops", dir="in", reason="no-sa") - no_sa0 == sent
            assert fp_a.proc.poll() is None

            # 5. 200 scrapes in 10 s while 100 pings a second flow: every scrape answers and parses, and the
            # pings fare as well as the same stream did without scrapes
            alone = net.ping(500, 0.01)
            results: list[Any] = []
            took = 0.0

            def scrapes() -> None:
                def run() -> None:
                    nonlocal took
                    start = time.monotonic()
                    for i in range(200):
                        try:
                            status, body = _get(port)
                            results.append((status, len(list(text_string_to_metric_families(body)))))
                        except Exception as exc:    # noqa: BLE001 - counted as a failed scrape
                            results.append(exc)
                        time.sleep(max(0.0, start + (i + 1) * 0.05 - time.monotonic()))
                    took = time.monotonic() - start
                in_netns(net.gA, run)

            t = threading.Thread(target=scrapes)
            t.start()
            during = net.ping(500, 0.01)
            t.join(timeout=60)
            assert not t.is_alive()
            bad = [r for r in results if not (isinstance(r, tuple) and r[0] == 200 and r[1] >= len(FAMILIES))]
            assert len(results) == 200 and not bad, bad[:5]
            lost_alone, lost_during = 500 - len(alone["got"]), 500 - len(during["got"])
            print(f"200 scrapes in {took:.1f} s; pings lost of 500: {lost_alone} alone, {lost_during} while scraped")
            assert lost_during <= lost_alone + 5, (lost_alone, lost_during)
            m2, listed2 = _quiet_read(scr, ctl_a)
            assert m2 == listed2
            key_in = next(k for k in m2 if k[2] == "in")
            assert m2[key_in]["packets"] - m1[key_in]["packets"] >= len(alone["got"]) + len(during["got"])
            assert fp_a.proc.poll() is None and ctl_a.proc.poll() is None
