"""Wireshark (tshark) decrypts and authenticates what `ipsecgw pcap encrypt` writes.

Wireshark's ESP dissector is an implementation we did not write; its 4.0 release
covers AES-GCM-16, AES-CBC with HMAC-SHA2 and NULL, which is what runs here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from control.cli import main
from fastpath.engines import present_names

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt: tshark)")

# ours -> Wireshark's esp_sa UAT labels
WS_ENC = {"aes-gcm-128": "AES-GCM with 16 octet ICV [RFC4106]", "aes-gcm-192": "AES-GCM with 16 octet ICV [RFC4106]",
          "aes-gcm-256": "AES-GCM with 16 octet ICV [RFC4106]", "aes-cbc-128": "AES-CBC [RFC3602]",
          "aes-cbc-256": "AES-CBC [RFC3602]", "null": "NULL"}
WS_INTEG = {None: "NULL", "hmac-sha256-128": "HMAC-SHA-256-128 [RFC4868]",
            "hmac-sha384-192": "HMAC-SHA-384-192 [RFC4868]", "hmac-sha512-256": "HMAC-SHA-512-256 [RFC4868]"}
KEYLEN = {"aes-gcm-128": 20, "aes-gcm-192": 28, "aes-gcm-256": 36, "aes-cbc-128": 16, "aes-cbc-256": 32, "null": 0,
          "hmac-sha256-128": 32, "hmac-sha384-192": 48, "hmac-sha512-256": 64}
ALGS = [("aes-gcm-128", None), ("aes-gcm-192", None), ("aes-gcm-256", None),
        ("aes-cbc-128", "hmac-sha256-128"), ("aes-cbc-256", "hmac-sha384-192"), ("aes-cbc-256", "hmac-sha512-256"),
        ("null", "hmac-sha256-128")]
# (mode, family, UDP encapsulation)
SHAPES = [("tunnel", 4, False), ("tunnel", 6, False), ("transport", 4, False), ("tunnel", 4, True)]
ENDPOINTS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}


def _sa_yaml(enc: str, integ: str | None, key: bytes, ikey: bytes, mode: str, family: int, udp: bool) -> str:
    src, dst = ENDPOINTS[family]
    lines = ["sas:", "  - spi: 0x00001234", f"    src: {src}", f"    dst: {dst}", f"    mode: {mode}",
             f"    encap: {'udp' if udp else 'none'}"]
    if integ is None:
        lines += [f"    aead: {enc}", f"    key: 0x{key.hex()}"]
    else:
        lines += [f"    cipher: {enc}", f"    integrity: {integ}", f"    integrity_key: 0x{ikey.hex()}"]
        if key:
            lines.append(f"    cipher_key: 0x{key.hex()}")
    return "\n".join(lines) + "\n"


def _tshark(pcap: Path, family: int, enc: str, integ: str | None, key: bytes, ikey: bytes,
            extra: tuple[str, ...] = ()) -> list[list[str]]:
    src, dst = ENDPOINTS[family]
    uat = (f'"IPv{family}","{src}","{dst}","0x00001234","{WS_ENC[enc]}","0x{key.hex()}",'
           f'"{WS_INTEG[integ]}","{("0x" + ikey.hex()) if ikey else ""}"')
    out = subprocess.run(["tshark", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
                          "-o", "esp.enable_authentication_check:TRUE", "-o", f"uat:esp_sa:{uat}",
                          "-d", "udp.port==4500,udpencap",
                          "-T", "fields", "-e", "esp.icv_good", "-e", "esp.icv_bad", "-e", "udp.dstport",
                          "-e", "data.data", *(a for f in extra for a in ("-e", f))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


@pytest.mark.parametrize("engine", present_names())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-v{s[1]}{'-udp' if s[2] else ''}")
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a[0] if a[1] is None else f"{a[0]}+{a[1]}")
def test_tshark_decrypts_and_authenticates(tmp_path: Path, alg, shape, engine: str) -> None:
    enc, integ = alg
    mode, family, udp = shape
    key, ikey = os.urandom(KEYLEN[enc]), (os.urandom(KEYLEN[integ]) if integ else b"")
    (tmp_path / "sas.yaml").write_text(_sa_yaml(enc, integ, key, ikey, mode, family, udp))
    src, dst = ENDPOINTS[family] if mode == "transport" else (("10.1.0.1", "10.2.0.1") if family == 4
                                                              else ("2001:db8:1::1", "2001:db8:2::1"))
    ip = IP if family == 4 else IPv6
    # Fixed text, not random bytes: random payloads now and then look like RTCP or another protocol to
    # Wireshark's heuristic dissectors, whose exceptions cut the ESP tree short (no ICV verdict).
    payloads = [(b"ipsecgw tshark check " * 15)[:n] for n in (1, 50, 300)]
    wrpcap(str(tmp_path / "clear.pcap"), [ip(src=src, dst=dst) / UDP(sport=1111, dport=7777) / Raw(p)
                                          for p in payloads])
    assert main(["pcap", "encrypt", "--engine", engine, "--sa", str(tmp_path / "sas.yaml"),
                 str(tmp_path / "clear.pcap"), str(tmp_path / "esp.pcap")]) == 0
    rows = _tshark(tmp_path / "esp.pcap", family, enc, integ, key, ikey)
    assert len(rows) == len(payloads)
    for (good, bad, dports, data), payload in zip(rows, payloads, strict=True):
        assert (good, bad) == ("1", "0"), f"Wireshark did not verify the ICV: {rows}"
        assert "7777" in dports.split(","), "Wireshark did not find the inner UDP header"
        assert data == payload.hex()


ONE_PAYLOAD = b"ipsecgw tshark check"


def _encrypt_one(tmp_path: Path, enc: str, integ: str | None, key: bytes, ikey: bytes) -> Path:
    (tmp_path / "sas.yaml").write_text(_sa_yaml(enc, integ, key, ikey, "tunnel", 4, False))
    # sport 1111: scapy's default source port 53 would hand the payload to the DNS dissector
    wrpcap(str(tmp_path / "clear.pcap"), [IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1111, dport=7777)
                                          / Raw(ONE_PAYLOAD)])
    assert main(["pcap", "encrypt", "--sa", str(tmp_path / "sas.yaml"), str(tmp_path / "clear.pcap"),
                 str(tmp_path / "esp.pcap")]) == 0
    return tmp_path / "esp.pcap"


def test_tshark_rejects_a_wrong_integrity_key(tmp_path: Path) -> None:
    """The check above can fail: one wrong HMAC key byte and Wireshark reports a bad ICV. The cipher key is
    right, so what Wireshark decrypts is the real packet and its verdict always comes out."""
    key, ikey = os.urandom(16), os.urandom(32)
    esp = _encrypt_one(tmp_path, "aes-cbc-128", "hmac-sha256-128", key, ikey)
    wrong = bytes([ikey[0] ^ 1]) + ikey[1:]
    [(good, bad, _, _)] = _tshark(esp, 4, "aes-cbc-128", "hmac-sha256-128", key, wrong)
    assert (good, bad) == ("0", "1")


def test_tshark_rejects_a_changed_icv(tmp_path: Path) -> None:
    """AES-GCM with the right key, one ICV bit flipped on the wire: Wireshark reports a bad ICV."""
    key = os.urandom(20)
    esp = _encrypt_one(tmp_path, "aes-gcm-128", None, key, b"")
    [pkt] = rdpcap(str(esp))
    raw = bytearray(bytes(pkt))
    raw[-1] ^= 1
    wrpcap(str(esp), [pkt.__class__(bytes(raw))])
    [(good, bad, dport, _)] = _tshark(esp, 4, "aes-gcm-128", None, key, b"")
    assert (good, bad, dport) == ("0", "1", "7777")


def test_tshark_never_accepts_a_wrong_aead_key(tmp_path: Path) -> None:
    """One wrong AES-GCM key byte: Wireshark never calls the ICV good. Its verdict is "bad" unless the
    garbage it decrypted has a next header and pad length that make its payload dissector throw first,
    which cuts the ESP tree short: random keys do that about one time in sixty (1.7 % of 2000 tried with
    Wireshark 4.0), so the verdict is taken as either a bad ICV or Wireshark's "Malformed Packet"."""
    key = os.urandom(20)
    esp = _encrypt_one(tmp_path, "aes-gcm-128", None, key, b"")
    wrong = bytes([key[0] ^ 1]) + key[1:]
    [(good, bad, dport, data, expert)] = _tshark(esp, 4, "aes-gcm-128", None, wrong, b"", ("_ws.expert.message",))
    assert good != "1" and "7777" not in dport.split(",") and data != ONE_PAYLOAD.hex()
    assert bad == "1" or (good, bad) == ("", "") and "Malformed Packet" in expert, (good, bad, expert)
