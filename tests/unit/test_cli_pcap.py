"""``ipsecgw pcap`` and ``ipsecgw caps`` end to end, with ESP built and checked by scapy."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter as ScapyPcapWriter
from scapy.utils import rdpcap, wrpcap, wrpcapng

from control.cli import main
from fastpath.engines import present_names
from fastpath.pcapfile import LINKTYPE_RAW

IPSECGW = Path(sys.executable).parent / "ipsecgw"
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
T0 = Decimal(1700000000)

KEYS = {
    0x1000: bytes(range(1, 21)),                      # aes-gcm-128 + salt
    0x1001: (bytes(range(32, 48)), bytes(range(64, 96))),   # aes-cbc-128, hmac-sha256-128
    0x1002: bytes(range(100, 136)),                   # aes-gcm-256 + salt, UDP-encapsulated
    0x1003: bytes(range(140, 160)),                   # aes-gcm-128, IPv6 outer
}

SA_YAML = f"""\
sas:
  - spi: 0x1000
    src: 192.0.2.1
    dst: 192.0.2.2
    aead: aes-gcm-128
    key: 0x{KEYS[0x1000].hex()}
  - spi: 4097
    src: 192.0.2.1
    dst: 192.0.2.2
    mode: transport
    cipher: aes-cbc-128
    cipher_key: {KEYS[0x1001][0].hex()}
    integrity: hmac-sha256-128
    integrity_key: 0x{KEYS[0x1001][1].hex()}
    seq: 5
  - spi: 0x1002
    src: 198.51.100.1
    dst: 198.51.100.2
    aead: aes-gcm-256
    key: "{KEYS[0x1002].hex()}"
    encap: udp
    replay_window: 128
  - spi: 0x1003
    src: 2001:db8::1
    dst: 2001:db8::2
    aead: aes-gcm-128
    key: 0x{KEYS[0x1003].hex()}
"""


def scapy_sas() -> dict[int, SecurityAssociation]:
    """The same SAs as SA_YAML, as scapy's independent ESP implementation sees them."""
    return {
        0x1000: SecurityAssociation(ESP, spi=0x1000, seq_num=1, crypt_algo="AES-GCM", crypt_key=KEYS[0x1000],
                                    tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2")),
        0x1001: SecurityAssociation(ESP, spi=0x1001, seq_num=1, crypt_algo="AES-CBC", crypt_key=KEYS[0x1001][0],
                                    auth_algo="SHA2-256-128", auth_key=KEYS[0x1001][1]),
        0x1002: SecurityAssociation(ESP, spi=0x1002, seq_num=1, crypt_algo="AES-GCM", crypt_key=KEYS[0x1002],
                                    tunnel_header=IP(src="198.51.100.1", dst="198.51.100.2"),
                                    nat_t_header=UDP(sport=4500, dport=4500)),
        0x1003: SecurityAssociation(ESP, spi=0x1003, seq_num=1, crypt_algo="AES-GCM", crypt_key=KEYS[0x1003],
                                    tunnel_header=IPv6(src="2001:db8::1", dst="2001:db8::2")),
    }


ENGINES = [pytest.param(name, marks=pytest.mark.skipif(name not in present_names(), reason=f"{name} absent"))
           for name in ("reference", "openssl")]


def inner(i: int, size: int = 0):
    payload = Raw(bytes([i % 251]) * (i % 40 + size))
    if i % 3 == 2:
        return IPv6(src="2001:db8:a::1", dst="2001:db8:b::1") / UDP(sport=1000 + i, dport=53) / payload
    return IP(src="10.0.0.1", dst="10.0.1.1", id=i) / TCP(sport=2000 + i, dport=80) / payload


def transport_pkt(i: int):
    return IP(src="192.0.2.1", dst="192.0.2.2", id=i) / UDP(sport=3000 + i, dport=7) / Raw(b"t" * i)


def run(*argv: str, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_sas(tmp_path: Path, text: str = SA_YAML) -> Path:
    p = tmp_path / "sas.yaml"
    p.write_text(text)
    return p


def write_eth(path: Path, frames, nano: bool = False) -> list[Decimal]:
    """Write frames with distinct microsecond timestamps; returns them."""
    times = []
    w = ScapyPcapWriter(str(path), nano=nano, linktype=1)
    for n, f in enumerate(frames):
        f.time = T0 + Decimal(n) / 1000 + Decimal("0.000001")
        times.append(f.time)
        w.write(f)
    w.close()
    return times


@pytest.fixture(scope="module")
def mixed_capture(tmp_path_factory):
    """An Ethernet capture of every kind of packet decrypt meets, and what it should turn into.

    ``expect`` holds, per input frame, the bytes decrypt must write (None: not written).
    """
    sas = scapy_sas()
    frames, expect = [], []

    def add(frame, out):
        frames.append(frame)
        expect.append(out)

    for i in range(30):
        pkt = inner(i)
        add(Ether(**MACS) / sas[0x1000].encrypt(pkt), bytes(pkt))
    for i in range(6):
        pkt = transport_pkt(i)
        add(Ether(**MACS) / Dot1Q(vlan=5) / sas[0x1001].encrypt(pkt), bytes(pkt))
    for i in range(6):
        pkt = inner(i)
        add(Ether(**MACS) / sas[0x1002].encrypt(pkt), bytes(pkt))
    for i in range(6):
        pkt = inner(i + 1)
        add(Ether(**MACS) / sas[0x1003].encrypt(pkt), bytes(pkt))
    plain = IP(src="10.9.9.9", dst="10.8.8.8") / TCP(sport=5, dport=6) / Raw(b"clear")
    ike = IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0IKEv2...")
    keepalive = IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=4500, dport=4500) / Raw(b"\xff")
    for p in (plain, ike, keepalive):
        add(Ether(**MACS) / p, bytes(p))
    add(Ether(**MACS) / ARP(), None)
    # Interleave the pass-through packets with ESP so order preservation is visible.
    order = [0, 48, 1, 49, 2, 50, 3, 51, *range(4, 48)]
    frames = [frames[k] for k in order]
    expect = [expect[k] for k in order]
    path = tmp_path_factory.mktemp("mixed") / "mixed.pcap"
    times = write_eth(path, frames)
    return path, expect, times


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch", ["256", "5"])
def test_decrypt_mixed_capture(tmp_path, capsys, mixed_capture, engine, batch):
    path, expect, times = mixed_capture
    out = tmp_path / "out.pcap"
    code, stdout, stderr = run("pcap", "decrypt", "--sa", str(write_sas(tmp_path)), "--engine", engine,
                               "--batch", batch, str(path), str(out), capsys=capsys)
    assert (code, stderr) == (0, "")
    assert stdout == f"decrypt: 52 packets: ok 48, not-esp 3, non-ip 1 (skipped); 51 written to {out}\n"
    got = rdpcap(str(out))
    assert [bytes(p) for p in got] == [e for e in expect if e is not None]
    assert [p.time for p in got] == [t for t, e in zip(times, expect, strict=True) if e is not None]
    with open(out, "rb") as f:
        assert int.from_bytes(f.read(24)[20:24], "little") == LINKTYPE_RAW


@pytest.mark.parametrize("engine", ENGINES)
def test_decrypt_failures_are_counted_and_exit_1(tmp_path, capsys, engine):
    sas = scapy_sas()
    good = [sas[0x1000].encrypt(inner(i)) for i in range(4)]
    tampered = bytearray(bytes(good[1]))
    tampered[-1] ^= 1
    stranger = SecurityAssociation(ESP, spi=0x2000, seq_num=1, crypt_algo="AES-GCM", crypt_key=KEYS[0x1000],
                                   tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2")).encrypt(inner(9))
    frames = [good[0], IP(bytes(tampered)), good[2], good[2], stranger, good[3], good[1]]
    src = tmp_path / "in.pcap"
    wrpcap(str(src), frames, linktype=LINKTYPE_RAW)
    out = tmp_path / "out.pcap"
    code, stdout, _ = run("pcap", "decrypt", "--sa", str(write_sas(tmp_path)), "--engine", engine,
                          str(src), str(out), capsys=capsys)
    assert code == 1
    # The tampered copy of packet 1 must not poison the replay window for the genuine one.
    assert stdout == f"decrypt: 7 packets: ok 4, no-sa 1, auth-failed 1, replay 1; 4 written to {out}\n"
    assert [bytes(p) for p in rdpcap(str(out))] == [bytes(inner(i)) for i in (0, 2, 3, 1)]


@pytest.mark.parametrize("engine", ENGINES)
def test_decrypt_a_capture_with_a_reserved_spi(tmp_path, capsys, engine):
    """Published test packets and real captures use SPIs in 1..255 (reserved for negotiation only):
    decrypt takes them, saying once per SA that the SPI is reserved."""
    key = KEYS[0x1000]
    sa = SecurityAssociation(ESP, spi=0x34, seq_num=1, crypt_algo="AES-GCM", crypt_key=key,
                             tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [sa.encrypt(inner(i)) for i in range(3)], linktype=LINKTYPE_RAW)
    sas = write_sas(tmp_path, f"sas:\n  - spi: 0x34\n    src: 192.0.2.1\n    dst: 192.0.2.2\n"
                              f"    aead: aes-gcm-128\n    key: 0x{key.hex()}\n")
    out = tmp_path / "out.pcap"
    code, stdout, stderr = run("pcap", "decrypt", "--sa", str(sas), "--engine", engine, str(src), str(out),
                               capsys=capsys)
    assert code == 0, stderr
    assert stderr.count("warning:") == 1 and "(spi 0x34): spi: 0x34 is in 1..255, reserved for IANA" in stderr
    assert stdout == f"decrypt: 3 packets: ok 3; 3 written to {out}\n"
    assert [bytes(p) for p in rdpcap(str(out))] == [bytes(inner(i)) for i in range(3)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("spi", [None, "0x1001", "4098", "0x1003"])
def test_encrypt_is_readable_by_scapy(tmp_path, capsys, engine, spi):
    number = int(spi, 0) if spi else 0x1000
    pkts = [transport_pkt(i) if number == 0x1001 else inner(i) for i in range(12)]
    src = tmp_path / "in.pcap"
    times = write_eth(src, [Ether(**MACS) / p for p in pkts], nano=True)
    out = tmp_path / "out.pcap"
    args = ["pcap", "encrypt", "--sa", str(write_sas(tmp_path)), "--engine", engine, "--batch", "5"]
    if spi:
        args += ["--spi", spi]
    code, stdout, stderr = run(*args, str(src), str(out), capsys=capsys)
    assert (code, stderr) == (0, "")
    assert stdout == f"encrypt (spi 0x{number:x}): 12 packets: ok 12; 12 written to {out}\n"
    got = rdpcap(str(out))
    assert [p.time for p in got] == times
    sa = scapy_sas()[number]
    first_seq = 5 if number == 0x1001 else 1
    for n, (p, orig) in enumerate(zip(got, pkts, strict=True)):
        outer = IPv6(bytes(p)) if number == 0x1003 else IP(bytes(p))
        esp = outer[ESP] if number != 0x1002 else ESP(bytes(outer[UDP].payload))
        assert esp.spi == number and esp.seq == first_seq + n
        if number == 0x1002:
            assert outer[UDP].sport == outer[UDP].dport == 4500
        assert bytes(sa.decrypt(outer)) == bytes(orig)


@pytest.mark.parametrize("engine", ENGINES)
def test_jumbo_roundtrip_through_both_verbs(tmp_path, capsys, engine):
    pkts = [inner(i, size=9000 if i % 4 == 0 else 0) for i in range(10)]
    src, enc, dec = tmp_path / "in.pcap", tmp_path / "enc.pcap", tmp_path / "dec.pcap"
    wrpcap(str(src), pkts, linktype=LINKTYPE_RAW)
    sa_file = str(write_sas(tmp_path))
    code, _, _ = run("pcap", "encrypt", "--sa", sa_file, "--spi", "0x1002", "--engine", engine, "--batch", "3",
                     str(src), str(enc), capsys=capsys)
    assert code == 0
    code, stdout, _ = run("pcap", "decrypt", "--sa", sa_file, "--engine", engine, str(enc), str(dec),
                          capsys=capsys)
    assert code == 0 and stdout.startswith("decrypt: 10 packets: ok 10;")
    assert [bytes(p) for p in rdpcap(str(dec))] == [bytes(p) for p in pkts]


def test_truncated_capture_keeps_what_came_before(tmp_path, capsys):
    sas = scapy_sas()
    pkts = [sas[0x1000].encrypt(inner(i)) for i in range(5)]
    src = tmp_path / "in.pcap"
    wrpcap(str(src), pkts, linktype=LINKTYPE_RAW)
    src.write_bytes(src.read_bytes()[:-7])
    out = tmp_path / "out.pcap"
    code, stdout, stderr = run("pcap", "decrypt", "--sa", str(write_sas(tmp_path)), str(src), str(out),
                               capsys=capsys)
    assert code == 1
    assert stdout == f"decrypt: 4 packets: ok 4; 4 written to {out}\n"
    assert f"{src}: packet 5: truncated packet data" in stderr
    assert [bytes(p) for p in rdpcap(str(out))] == [bytes(inner(i)) for i in range(4)]


def test_pcapng_is_refused(tmp_path, capsys):
    src = tmp_path / "in.pcapng"
    wrpcapng(str(src), [Ether(**MACS) / inner(1)])
    out = tmp_path / "out.pcap"
    code, stdout, stderr = run("pcap", "decrypt", "--sa", str(write_sas(tmp_path)), str(src), str(out),
                               capsys=capsys)
    assert (code, stdout) == (2, "")
    assert "pcapng" in stderr and "editcap" in stderr
    assert not out.exists()


def test_bad_sa_file_one_message_exit_2(tmp_path, capsys):
    bad = SA_YAML.replace(f"key: 0x{KEYS[0x1003].hex()}", f"key: 0x{KEYS[0x1003][:16].hex()}")
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [inner(1)], linktype=LINKTYPE_RAW)
    out = tmp_path / "out.pcap"
    for verb in ("decrypt", "encrypt"):
        code, stdout, stderr = run("pcap", verb, "--sa", str(write_sas(tmp_path, bad)), str(src), str(out),
                                   capsys=capsys)
        assert (code, stdout) == (2, "")
        assert stderr == (f"{tmp_path / 'sas.yaml'}: sas[3] (spi 0x1003): key: expected 20 bytes for aes-gcm-128 "
                          "(cipher key + 4-byte salt), got 16 bytes\n")
        assert not out.exists()


def test_yaml_syntax_error_and_unknown_spi(tmp_path, capsys):
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [inner(1)], linktype=LINKTYPE_RAW)
    sa_file = write_sas(tmp_path, SA_YAML.replace("    seq: 5\n", "    seq: [5\n"))
    code, _, stderr = run("pcap", "decrypt", "--sa", str(sa_file), str(src), str(tmp_path / "o"), capsys=capsys)
    assert code == 2 and stderr.startswith(f"{sa_file}: line ") and "YAML syntax error" in stderr
    code, _, stderr = run("pcap", "encrypt", "--sa", str(write_sas(tmp_path)), "--spi", "0x4242", str(src),
                          str(tmp_path / "o"), capsys=capsys)
    assert code == 2 and "no SA with spi 0x4242 (the file has 0x1000, 0x1001, 0x1002, 0x1003)" in stderr


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["pcap", "decrypt", "--sa", "x", "--engine", "fastest", "a", "b"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["pcap", "encrypt", "--sa", "x", "--spi", "zz", "a", "b"])
    capsys.readouterr()
    code, _, stderr = run("pcap", "decrypt", "--sa", str(write_sas(tmp_path)), str(tmp_path / "missing.pcap"),
                          str(tmp_path / "o"), capsys=capsys)
    assert code == 2 and "missing.pcap: cannot open" in stderr


def test_console_script_decrypts(tmp_path, mixed_capture):
    """The installed ``ipsecgw`` script (its ``caps``, which starts DPDK to discover devices, is
    tests/e2e/test_dpdk_caps.py::test_console_script_caps)."""
    path, _, _ = mixed_capture
    out = tmp_path / "out.pcap"
    r = subprocess.run([str(IPSECGW), "pcap", "decrypt", "--sa", str(write_sas(tmp_path)), str(path), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("decrypt: 52 packets: ok 48, not-esp 3")


def test_packets_cut_short_by_snaplen_are_not_esp_failures(tmp_path, capsys):
    sas = scapy_sas()
    big = IP(src="10.9.9.9", dst="10.8.8.8") / TCP(sport=5, dport=6) / Raw(b"z" * 500)
    esp = sas[0x1000].encrypt(inner(1))
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [big, esp], linktype=LINKTYPE_RAW)
    # Cut the first record to 96 bytes as tcpdump -s 96 would (orig_len stays 540).
    data = bytearray(src.read_bytes())
    cut = 24 + 16 + 96
    struct.pack_into("<I", data, 24 + 8, 96)
    src.write_bytes(bytes(data[:cut]) + bytes(data[24 + 16 + len(big):]))
    out = tmp_path / "out.pcap"
    code, stdout, _ = run("pcap", "decrypt", "--sa", str(write_sas(tmp_path)), str(src), str(out), capsys=capsys)
    assert code == 0
    assert stdout == (f"decrypt: 2 packets: ok 1, partial 1 (cut short by the capture, written unchanged); "
                      f"2 written to {out}\n")
    assert [bytes(p) for p in rdpcap(str(out))] == [bytes(big)[:96], bytes(inner(1))]


def test_output_must_not_be_the_input(tmp_path, capsys):
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [inner(1)], linktype=LINKTYPE_RAW)
    before = src.read_bytes()
    code, _, stderr = run("pcap", "decrypt", "--sa", str(write_sas(tmp_path)), str(src), str(src), capsys=capsys)
    assert code == 2 and "is the input file" in stderr
    assert src.read_bytes() == before


def test_cpu_features_from_a_cpuinfo_file(tmp_path):
    from fastpath.caps import cpu_info

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu aes avx2 sha_ni pclmulqdq\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    info = cpu_info(x86)
    assert info["model"] == "Test CPU"
    assert info["features"] == {"aes": True, "pclmulqdq": True, "avx2": True, "avx512f": False, "vaes": False,
                                "vpclmulqdq": False, "sha_ni": True}
    arm = tmp_path / "arm"
    arm.write_text("Features\t: fp asimd aes pmull sha1 sha2\n")
    assert cpu_info(arm)["features"]["sha_ni"] is True
    assert set(cpu_info(tmp_path / "none")["features"].values()) == {None}


def test_json_carries_the_counts_of_the_text(tmp_path, capsys):
    """pcap decrypt/encrypt --json: the same counts as the text line (statuses by label), the same exit code."""
    sas = scapy_sas()
    good = [sas[0x1000].encrypt(inner(i)) for i in range(3)]
    tampered = bytearray(bytes(good[1]))
    tampered[-1] ^= 1
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [good[0], IP(bytes(tampered)), good[2], good[2]], linktype=LINKTYPE_RAW)
    sa_file, out = str(write_sas(tmp_path)), tmp_path / "out.pcap"
    code, text, _ = run("pcap", "decrypt", "--sa", sa_file, str(src), str(out), capsys=capsys)
    jcode, js, _ = run("pcap", "decrypt", "--sa", sa_file, "--json", str(src), str(out), capsys=capsys)
    assert code == jcode == 1
    assert text == f"decrypt: 4 packets: ok 2, auth-failed 1, replay 1; 2 written to {out}\n"
    assert json.loads(js) == {"verb": "decrypt", "spi": None, "output": str(out), "failed": 2, "read": 4,
                              "written": 2, "partial": 0, "non_ip": 0,
                              "status": {"ok": 2, "auth-failed": 1, "replay": 1}, "error": None}
    plain = tmp_path / "plain.pcap"
    wrpcap(str(plain), [inner(i) for i in range(3)], linktype=LINKTYPE_RAW)
    code, text, _ = run("pcap", "encrypt", "--sa", sa_file, str(plain), str(out), capsys=capsys)
    jcode, js, _ = run("pcap", "encrypt", "--sa", sa_file, "--json", str(plain), str(out), capsys=capsys)
    doc = json.loads(js)
    assert code == jcode == 0
    assert text.startswith(f"encrypt (spi {doc['spi']}): 3 packets: ok 3;")
    assert (doc["read"], doc["written"], doc["status"], doc["failed"]) == (3, 3, {"ok": 3}, 0)
