"""``ipsecgw pcap`` with AH SAs (``proto: ah``), through every engine that has AH: scapy's AH protects and
verifies, AES-GMAC is checked against the ICV the test computes with cryptography's AES-GCM."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap
from support.ah import gmac_icv, scapy_ah_sa
from support.engines import AH_ENGINES

from cdefs.sa import SA, Mode
from control.cli import main
from fastpath.cli import pcap as pcap_cli
from fastpath.pcapfile import LINKTYPE_RAW

KEYS = {
    0x2001: bytes(range(1, 33)),            # hmac-sha256-128, tunnel IPv4
    0x2002: bytes(range(40, 60)),           # hmac-sha1-96, transport IPv4
    0x2003: bytes(range(64, 128)),          # hmac-sha512-256, tunnel IPv6
    0x2004: bytes(range(130, 178)),         # hmac-sha384-192, transport IPv6
    0x2005: bytes(range(180, 200)),         # aes-gmac-128 + salt, tunnel IPv4
}

SA_YAML = f"""\
sas:
  - spi: 0x2001
    proto: ah
    src: 192.0.2.1
    dst: 192.0.2.2
    integrity: hmac-sha256-128
    integrity_key: 0x{KEYS[0x2001].hex()}
  - spi: 0x2002
    proto: ah
    mode: transport
    src: 192.0.2.1
    dst: 192.0.2.2
    integrity: hmac-sha1-96
    integrity_key: {KEYS[0x2002].hex()}
    replay_window: 32
  - spi: 0x2003
    proto: ah
    src: 2001:db8::1
    dst: 2001:db8::2
    integrity: hmac-sha512-256
    integrity_key: 0x{KEYS[0x2003].hex()}
    esn: true
    seq: 0x1fffffffe
  - spi: 0x2004
    proto: ah
    mode: transport
    src: 2001:db8::1
    dst: 2001:db8::2
    integrity: hmac-sha384-192
    integrity_key: 0x{KEYS[0x2004].hex()}
  - spi: 0x2005
    proto: ah
    src: 192.0.2.1
    dst: 192.0.2.2
    integrity: aes-gmac-128
    integrity_key: 0x{KEYS[0x2005].hex()}
  - spi: 0x1000
    src: 192.0.2.1
    dst: 192.0.2.2
    aead: aes-gcm-128
    key: 0x{bytes(20).hex()}
"""

_ENDS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
_HMAC = {0x2001: ("hmac-sha256-128", Mode.TUNNEL, 4, 1), 0x2002: ("hmac-sha1-96", Mode.TRANSPORT, 4, 1),
         0x2003: ("hmac-sha512-256", Mode.TUNNEL, 6, 0x1FFFFFFFE), 0x2004: ("hmac-sha384-192", Mode.TRANSPORT, 6, 1)}


def sa_of(spi: int) -> SA:
    """The SA of SA_YAML written out again in the model, for scapy's view of it."""
    integ, mode, family, seq = _HMAC[spi] if spi in _HMAC else ("aes-gmac-128", Mode.TUNNEL, 4, 1)
    src, dst = (ipaddress.ip_address(a) for a in _ENDS[family])
    return SA(spi=spi, src=src, dst=dst, enc="null", enc_key=b"", integ=integ, integ_key=KEYS[spi], mode=mode,
              esn=spi == 0x2003, seq=seq, proto="ah")


def packet(spi: int, i: int):
    """A packet for the SA: transport ones between its own addresses, tunnel ones inner addresses."""
    family, mode = _HMAC[spi][2] if spi in _HMAC else 4, sa_of(spi).mode
    if mode is Mode.TRANSPORT:
        src, dst = _ENDS[family]
    else:
        src, dst = ("10.0.0.1", "10.0.1.1") if family == 4 else ("fd00::1", "fd00:1::1")
    ip = IP(src=src, dst=dst, id=i) if family == 4 else IPv6(src=src, dst=dst)
    return ip / (TCP(sport=2000 + i, dport=80) if i % 2 else UDP(sport=1000 + i, dport=53)) / Raw(b"a" * i)


def run(*argv: str, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def sa_file(tmp_path: Path, text: str = SA_YAML) -> str:
    p = tmp_path / "sas.yaml"
    p.write_text(text)
    return str(p)


def _ip(raw: bytes):
    return (IP if raw[0] >> 4 == 4 else IPv6)(raw)


@pytest.fixture(params=AH_ENGINES)
def engine(request) -> str:
    """Each engine with AH in turn, named on the command line."""
    return request.param


@pytest.mark.parametrize("verb", ["decrypt", "unprotect"])
def test_decrypt_scapy_ah_byte_identical(tmp_path, capsys, verb, engine):
    frames, expect = [], []
    for spi in _HMAC:
        for i in range(5):
            # One scapy SA per packet: scapy's counter does not carry into the ESN high half (0x2003 does).
            pkt = scapy_ah_sa(sa_of(spi), seq=_HMAC[spi][3] + i).encrypt(packet(spi, i))
            frames.append(pkt)
            expect.append(bytes(scapy_ah_sa(sa_of(spi), seq=_HMAC[spi][3] + i).decrypt(_ip(bytes(pkt)))))
            assert expect[-1] == bytes(packet(spi, i))
    clear = IP(src="10.9.9.9", dst="10.8.8.8") / UDP() / Raw(b"clear")
    frames.insert(3, clear)
    expect.insert(3, bytes(clear))
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(src), frames, linktype=LINKTYPE_RAW)
    code, stdout, stderr = run("pcap", verb, "--sa", sa_file(tmp_path), "--engine", engine, str(src), str(out),
                               capsys=capsys)
    assert (code, stderr) == (0, "")
    assert stdout == f"decrypt: 21 packets: ok 20, not-esp 1; 21 written to {out}\n"
    assert [bytes(p) for p in rdpcap(str(out))] == expect


def test_decrypt_failures_by_status(tmp_path, capsys, engine):
    ssa = scapy_ah_sa(sa_of(0x2002))
    good = [bytes(ssa.encrypt(packet(0x2002, i))) for i in range(3)]
    tampered = bytearray(good[1])
    tampered[-1] ^= 1
    stranger = scapy_ah_sa(SA(**{**vars(sa_of(0x2002)), "spi": 0x3000})).encrypt(packet(0x2002, 9))
    short = bytearray(good[0][:20 + 12])
    short[2:4] = (32).to_bytes(2, "big")
    frames = [_ip(good[0]), _ip(bytes(tampered)), _ip(good[1]), _ip(good[1]), stranger, IP(bytes(short)),
              _ip(good[2])]
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(src), frames, linktype=LINKTYPE_RAW)
    code, stdout, _ = run("pcap", "decrypt", "--sa", sa_file(tmp_path), "--engine", engine, str(src), str(out),
                          capsys=capsys)
    assert code == 1
    # The tampered copy of packet 1 must not take its place in the replay window.
    assert stdout == f"decrypt: 7 packets: ok 3, no-sa 1, auth-failed 1, replay 1, malformed 1; 3 written to {out}\n"
    assert [bytes(p) for p in rdpcap(str(out))] == [bytes(packet(0x2002, i)) for i in range(3)]


@pytest.mark.parametrize("verb", ["encrypt", "protect"])
@pytest.mark.parametrize("spi", sorted(_HMAC))
def test_encrypt_verifies_in_scapy(tmp_path, capsys, verb, spi, engine):
    plain = [packet(spi, i) for i in range(4)]
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(src), plain, linktype=LINKTYPE_RAW)
    code, stdout, _ = run("pcap", verb, "--sa", sa_file(tmp_path), "--engine", engine, "--spi", hex(spi), str(src),
                          str(out), capsys=capsys)
    assert code == 0, stdout
    got = [bytes(p) for p in rdpcap(str(out))]
    seq = _HMAC[spi][3]
    for n, (p, want) in enumerate(zip(got, plain, strict=True)):
        assert p[9 if p[0] >> 4 == 4 else 6] == 51
        if IP in want and want[IP].id == 0 and sa_of(spi).mode is Mode.TRANSPORT:
            # an IPv4 ID of 0 is replaced (Linux's raw send would replace it after the ICV covered it)
            assert IP(p).id != 0
            want = want.copy()
            want[IP].id, want[IP].chksum = IP(p).id, None
        assert bytes(scapy_ah_sa(sa_of(spi), seq=seq + n).decrypt(_ip(p))) == bytes(want)


def test_encrypt_gmac_matches_independent_icv_and_decrypts(tmp_path, capsys, engine):
    plain = [packet(0x2005, i) for i in range(3)]
    src, out, back = tmp_path / "in.pcap", tmp_path / "out.pcap", tmp_path / "back.pcap"
    wrpcap(str(src), plain, linktype=LINKTYPE_RAW)
    sas = sa_file(tmp_path)
    assert run("pcap", "protect", "--sa", sas, "--engine", engine, "--spi", "0x2005", str(src), str(out),
               capsys=capsys)[0] == 0
    got = [bytes(p) for p in rdpcap(str(out))]
    for n, p in enumerate(got):
        assert p[32:56] == gmac_icv(sa_of(0x2005), p, seq=n + 1)
    code, stdout, _ = run("pcap", "unprotect", "--sa", sas, "--engine", engine, str(out), str(back), capsys=capsys)
    assert code == 0, stdout
    assert [bytes(p) for p in rdpcap(str(back))] == [bytes(p) for p in plain]


@pytest.mark.parametrize(("field", "text", "message"), [
    ("proto", "proto: gre", "proto: expected one of esp, ah, got 'gre'"),
    ("aead", "proto: ah\n    aead: aes-gcm-128", "aead: expected nothing: an AH SA authenticates only"),
    ("integrity", "proto: ah\n    integrity: aes-cbc-128\n    integrity_key: 00",
     "integrity: expected one of hmac-sha1-96, hmac-sha256-128, hmac-sha384-192, hmac-sha512-256, aes-gmac-128"),
    ("integrity_key", "proto: ah\n    integrity: aes-gmac-256\n    integrity_key: 0x" + "00" * 32,
     "integrity_key: expected 36 bytes for aes-gmac-256 (AES key + 4-byte salt), got 32 bytes"),
    ("encap", "proto: ah\n    integrity: hmac-sha1-96\n    integrity_key: 0x" + "00" * 20 + "\n    encap: udp",
     "encap: expected none: AH cannot pass a NAT"),
    ("no key", "proto: ah\n    integrity: hmac-sha1-96",
     "integrity_key: expected 20 bytes for hmac-sha1-96, got nothing"),
])
def test_bad_ah_fields_one_clear_message(tmp_path, capsys, field, text, message):
    path = sa_file(tmp_path, f"sas:\n  - spi: 0x2001\n    src: 192.0.2.1\n    dst: 192.0.2.2\n    {text}\n")
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [packet(0x2001, 0)], linktype=LINKTYPE_RAW)
    code, _, stderr = run("pcap", "decrypt", "--sa", path, str(src), str(tmp_path / "o.pcap"), capsys=capsys)
    assert code == 2
    assert stderr.startswith(f"{path}: sas[0] (spi 0x2001): {message}")
    assert "00000000" not in stderr


def test_best_engine_for_ah_is_the_fastest_with_ah(tmp_path, capsys, monkeypatch):
    """``--engine best`` no longer falls back to the reference for AH: it takes the first present engine
    (fastest first) whose AH algorithms cover the SAs."""
    made = []
    real_create = pcap_cli.create

    def spy(name, capacity):
        made.append(name)
        return real_create(name, capacity=capacity)

    monkeypatch.setattr(pcap_cli, "create", spy)
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [packet(0x2001, 0)], linktype=LINKTYPE_RAW)
    code, _, _ = run("pcap", "encrypt", "--sa", sa_file(tmp_path), str(src), str(tmp_path / "o.pcap"), capsys=capsys)
    assert code == 0
    assert made == [AH_ENGINES[0]]
