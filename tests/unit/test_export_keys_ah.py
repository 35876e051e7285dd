"""``ipsecgw export-keys`` for AH SAs: the ah_sa table carries each AH SA's real key, so a tool we did not
write (scapy's AH) verifies what our engine protected with nothing but the exported line."""

from __future__ import annotations

import csv
import ipaddress
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH, SecurityAssociation
from support.ah import SCAPY_AH_AUTH, make_ah_sa
from support.engines import install, new_engine, run
from support.sa import make_sa

from control.wireshark_keys import wireshark_tables
from fastpath.status import Status


def _children(*sas):
    return [SimpleNamespace(name="net", keys=list(sas))]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("integ", sorted(SCAPY_AH_AUTH))
def test_exported_ah_line_verifies_our_packets_in_scapy(integ: str, family: int) -> None:
    sa = make_ah_sa(integ, family=family)
    tables = wireshark_tables([], _children(sa))
    assert tables["esp_sa"] == ""
    (row,) = csv.reader(tables["ah_sa"].splitlines())
    fam, src, dst, spi, alg, key = row
    assert (fam, ipaddress.ip_address(src), ipaddress.ip_address(dst)) == (f"IPv{family}", sa.src, sa.dst)

    eng = new_engine("reference")
    install(eng, 0, sa, "out")
    inner = (IP(src="10.1.0.1", dst="10.2.0.1") if family == 4 else IPv6(src="fd00:1::1", dst="fd00:2::1")) / \
        UDP(sport=7, dport=7) / b"exported"
    ((status, out, _),) = run(eng, "out", [bytes(inner)])
    assert status == Status.OK
    outer = IPv6 if family == 6 else IP
    tunnel = outer(src=src, dst=dst)
    scapy_sa = SecurityAssociation(AH, spi=int(spi, 16), auth_algo=SCAPY_AH_AUTH[alg],
                                   auth_key=bytes.fromhex(key[2:]), tunnel_header=tunnel)
    got = scapy_sa.decrypt(outer(out))           # raises IPSecIntegrityError if the key were not the SA's
    assert bytes(got) == bytes(inner)


def test_gmac_and_esp_sas_go_to_their_tables() -> None:
    gmac = make_ah_sa("aes-gmac-128")
    esp = make_sa("aes-gcm-128")
    tables = wireshark_tables([], _children(gmac, esp))
    (row,) = csv.reader(tables["ah_sa"].splitlines())
    assert row[4] == "aes-gmac-128" and bytes.fromhex(row[5][2:]) == gmac.integ_key      # salt at the end
    assert len(tables["esp_sa"].splitlines()) == 1 and f"0x{esp.spi:08x}" in tables["esp_sa"]
