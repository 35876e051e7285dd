"""Static SA files: every field maps onto the SA model; every mistake gets one precise message."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from cdefs.sa import Mode, TrafficSelector
from fastpath.sa_file import SAFileError, load_sa_file

GCM_KEY = "0x00112233445566778899aabbccddeeff01020304"     # 16-byte key + 4-byte salt
SHA256_KEY = "aa" * 32


def write(tmp_path, text: str, name: str = "sas.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def load_error(tmp_path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(SAFileError) as info:
        load_sa_file(p)
    return str(info.value)


def one_sa(extra: str = "", **fields: str) -> str:
    base = {"spi": "0x00001000", "src": "192.0.2.1", "dst": "192.0.2.2", "aead": "aes-gcm-128", "key": GCM_KEY}
    base.update(fields)
    lines = [f"    {k}: {v}" for k, v in base.items() if v is not None]
    body = "\n".join(lines)
    body = "  - " + body.lstrip()
    return "sas:\n" + body + ("\n" + textwrap.indent(textwrap.dedent(extra), "    ") if extra else "") + "\n"


def test_full_example_from_the_issue(tmp_path):
    p = write(tmp_path, f"""\
        sas:
          - spi: 0x00001000
            src: 192.0.2.1          # outer source/destination
            dst: 192.0.2.2
            mode: tunnel
            aead: aes-gcm-128
            key: {GCM_KEY}
            esn: false
            seq: 1
            replay_window: 64
            encap: none
          - spi: 4097
            src: 2001:db8::1
            dst: 2001:db8::2
            mode: transport
            cipher: aes-cbc-256
            cipher_key: {"0x" + "11" * 32}
            integrity: hmac-sha512-256
            integrity_key: {"22" * 64}
            esn: true
            seq: 0x100000000
            replay_window: 0
            encap: udp
            sport: 4501
            dport: 4502
            ttl: 9
            df: set
            dscp: 46
            ecn: compat
            flowlabel: zero
            local_ts: [10.0.0.0/8, {{net: "2001:db8:1::/48", proto: tcp, ports: "80-443"}}]
            remote_ts:
              - {{net: 192.168.0.0/16, proto: 17, ports: 53}}
            lifetime: {{soft_bytes: 1000, hard_bytes: 2000, soft_packets: 3, hard_packets: 4}}
        """)
    a, b = load_sa_file(p)
    assert a.spi == 0x1000 and a.enc == "aes-gcm-128" and a.integ is None
    assert a.enc_key == bytes.fromhex(GCM_KEY[2:]) and a.salt == bytes.fromhex("01020304")
    assert a.mode is Mode.TUNNEL and a.src == ipaddress.ip_address("192.0.2.1") and not a.udp_encap
    assert b.spi == 4097 and b.mode is Mode.TRANSPORT and b.esn and b.seq == 2**32
    assert b.enc == "aes-cbc-256" and b.enc_key == b"\x11" * 32
    assert b.integ == "hmac-sha512-256" and b.integ_key == b"\x22" * 64
    assert b.replay_window == 0 and b.udp_encap and (b.sport, b.dport, b.ttl) == (4501, 4502, 9)
    assert (b.df, b.dscp, b.ecn, b.flowlabel) == ("set", 46, "compat", "zero")
    assert b.local_ts == [TrafficSelector.from_network("10.0.0.0/8"),
                          TrafficSelector.from_network("2001:db8:1::/48", 6, 80, 443)]
    assert b.remote_ts == [TrafficSelector.from_network("192.168.0.0/16", 17, 53, 53)]
    assert (b.lifetime.soft_bytes, b.lifetime.hard_bytes, b.lifetime.soft_packets, b.lifetime.hard_packets) == (
        1000, 2000, 3, 4)


def test_keys_keep_leading_zero_bytes(tmp_path):
    # YAML would read 0x0000... as the integer 0; the key must stay 20 bytes.
    sa, = load_sa_file(write(tmp_path, one_sa(key="0x" + "00" * 19 + "01")))
    assert sa.enc_key == b"\x00" * 19 + b"\x01"
    sa, = load_sa_file(write(tmp_path, one_sa(key="00" * 20)))     # digits only, no 0x
    assert sa.enc_key == b"\x00" * 20
    sa, = load_sa_file(write(tmp_path, one_sa(key='"' + GCM_KEY[2:].upper() + '"')))
    assert sa.enc_key == bytes.fromhex(GCM_KEY[2:])


def test_spi_decimal_is_not_octal(tmp_path):
    sa, = load_sa_file(write(tmp_path, one_sa(spi="0400")))
    assert sa.spi == 400


def test_null_cipher_and_copy_dscp(tmp_path):
    sa, = load_sa_file(write(tmp_path, one_sa(aead=None, key=None, cipher="null", integrity="hmac-sha256-128",
                                              integrity_key=SHA256_KEY, dscp="copy")))
    assert sa.enc == "null" and sa.enc_key == b"" and sa.dscp is None


def test_wrong_key_length_message_matches_the_issue(tmp_path):
    msg = load_error(tmp_path, f"""\
        sas:
          - spi: 0x1000
            src: 192.0.2.1
            dst: 192.0.2.2
            aead: aes-gcm-128
            key: {GCM_KEY}
          - spi: 0x1001
            src: 192.0.2.1
            dst: 192.0.2.2
            aead: aes-gcm-128
            key: 0x00112233445566778899aabbccddeeff
        """)
    assert msg.endswith("sas.yaml: sas[1] (spi 0x1001): key: expected 20 bytes for aes-gcm-128 "
                        "(cipher key + 4-byte salt), got 16 bytes")
    assert "00112233" not in msg


@pytest.mark.parametrize("fields, expect", [
    ({"spi": "0"}, "sas[0] (spi 0x0): spi: expected an integer from 1 to 0xffffffff (0 is reserved), got 0"),
    ({"spi": "0x100000000"}, "sas[0]: spi: expected an integer from 1"),
    ({"src": "192.0.2.300"}, "(spi 0x1000): src: expected an IPv4 or IPv6 address, got '192.0.2.300'"),
    ({"dst": "2001:db8::2"}, "(spi 0x1000): dst: expected an IPv4 address like src"),
    ({"aead": "aes-gcm-512"}, "(spi 0x1000): aead: expected one of aes-gcm-128"),
    ({"mode": "tunel"}, "(spi 0x1000): mode: expected one of tunnel, transport, got 'tunel'"),
    ({"esn": "maybe"}, "(spi 0x1000): esn: expected true or false, got 'maybe'"),
    ({"seq": "0"}, "(spi 0x1000): seq: expected an integer from 1 to 4294967295, got 0"),
    ({"replay_window": "5000"}, "(spi 0x1000): replay_window: expected an integer from 0 to 4096, got 5000"),
    ({"encap": "tcp"}, "(spi 0x1000): encap: expected one of none, udp, got 'tcp'"),
    ({"sport": "0"}, "(spi 0x1000): sport: expected an integer from 1 to 65535, got 0"),
    ({"ttl": "256"}, "(spi 0x1000): ttl: expected an integer from 1 to 255, got 256"),
    ({"dscp": "64"}, "(spi 0x1000): dscp: expected copy or an integer from 0 to 63, got 64"),
    ({"df": "maybe"}, "(spi 0x1000): df: expected one of copy, set, clear"),
    ({"ecn": "on"}, "(spi 0x1000): ecn: expected one of normal, compat, got true"),
    ({"flowlabel": "keep"}, "(spi 0x1000): flowlabel: expected one of copy, zero"),
    ({"local_ts": "10.0.0.0/8"}, "(spi 0x1000): local_ts: expected a list of CIDR strings"),
    ({"remote_ts": "[10.0.0.0/33]"}, "(spi 0x1000): remote_ts[0]: expected a CIDR network"),
    ({"remote_ts": "[{net: 10.0.0.0/8, ports: 80-70}]"}, "remote_ts[0].ports: expected a port or a range"),
    ({"remote_ts": "[{net: 10.0.0.0/8, proto: xtp}]"}, "remote_ts[0].proto: expected a protocol number"),
    ({"remote_ts": "[{nett: 10.0.0.0/8}]"}, "remote_ts[0].nett: expected one of the keys net, proto, ports"),
    ({"lifetime": "{soft_byte: 10}"}, "(spi 0x1000): lifetime.soft_byte: expected one of the keys soft_bytes"),
    ({"lifetime": "{hard_bytes: -1}"}, "lifetime.hard_bytes: expected a non-negative integer"),
    ({"replay_windw": "64"}, "(spi 0x1000): replay_windw: expected a known SA field"),
    ({"key": None}, "(spi 0x1000): key: expected 20 bytes for aes-gcm-128, got nothing"),
    ({"key": "0xZZ"}, "(spi 0x1000): key: expected a hex string (0x prefix optional) with an even number of digits, "
                      "got a value with non-hex characters"),
    ({"key": "0x123"}, "key: expected a hex string (0x prefix optional) with an even number of digits, got 3 digits"),
    ({"key": "[1]"}, "(spi 0x1000): key: expected a hex string"),
    ({"cipher": "aes-cbc-128"}, "(spi 0x1000): aead: expected exactly one of aead (with key) or cipher"),
    ({"integrity": "hmac-sha256-128"}, "(spi 0x1000): integrity: expected nothing: aes-gcm-128 is an AEAD"),
    ({"aead": None, "key": None, "cipher": "aes-cbc-128", "cipher_key": "0x" + "11" * 16},
     "(spi 0x1000): integrity: expected one of hmac-sha256-128, hmac-sha384-192, hmac-sha512-256 with aes-cbc-128"),
    ({"aead": None, "key": None, "cipher": "aes-cbc-128", "cipher_key": "0x" + "11" * 15,
      "integrity": "hmac-sha256-128", "integrity_key": SHA256_KEY},
     "(spi 0x1000): cipher_key: expected 16 bytes for aes-cbc-128, got 15 bytes"),
    ({"aead": None, "key": None, "cipher": "aes-cbc-128", "cipher_key": "0x" + "11" * 16,
      "integrity": "hmac-sha384-192", "integrity_key": SHA256_KEY},
     "(spi 0x1000): integrity_key: expected 48 bytes for hmac-sha384-192, got 32 bytes"),
    ({"aead": None, "key": None, "cipher": "", "integrity": "hmac-sha256-128", "integrity_key": SHA256_KEY},
     "(spi 0x1000): cipher: expected one of aes-cbc-128, aes-cbc-256, null, got nothing"),
])
def test_field_errors_name_file_sa_and_field(tmp_path, fields, expect):
    msg = load_error(tmp_path, one_sa(**fields))
    assert msg.startswith(str(tmp_path / "sas.yaml") + ": sas[0]")
    assert expect in msg
    assert "\n" not in msg
    for secret in ("0011223344", "aaaaaaaaaa", "1111111111"):
        assert secret not in msg


def test_missing_required_field(tmp_path):
    assert "sas[0] (spi 0x1000): dst: expected a value (required), got nothing" in load_error(
        tmp_path, one_sa(dst=None))


def test_duplicate_spi_and_destination(tmp_path):
    text = one_sa() + one_sa().removeprefix("sas:\n")
    assert "sas[1] (spi 0x1000): spi: expected an SPI not already used for dst 192.0.2.2, got the SPI of sas[0]" in (
        load_error(tmp_path, text))


def test_duplicate_mapping_key_is_an_error(tmp_path):
    msg = load_error(tmp_path, one_sa(extra="replay_window: 64\nreplay_window: 32"))
    assert "duplicate key 'replay_window'" in msg and "line 8" in msg


def test_top_level_shape(tmp_path):
    assert load_error(tmp_path, "").endswith("expected a mapping with a 'sas' list at the top level")
    assert load_error(tmp_path, "sas: []").endswith("sas: expected a non-empty list of SAs, got a list")
    assert "sa: expected only the top-level key 'sas'" in load_error(tmp_path, one_sa() + "sa: 1\n")
    assert load_error(tmp_path, "sas: [1]").endswith("sas[0]: expected a mapping of SA fields, got 1")


def test_yaml_syntax_error_names_line_without_quoting_it(tmp_path):
    msg = load_error(tmp_path, f"""\
        sas:
          - spi: 0x1000
            key: [{GCM_KEY}
            src: 192.0.2.1
        """)
    assert msg.startswith(str(tmp_path / "sas.yaml") + ": line 4, column")
    assert "YAML syntax error" in msg and "0011223344" not in msg


def test_unreadable_file(tmp_path):
    with pytest.raises(SAFileError, match="missing.yaml: cannot read SA file"):
        load_sa_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("spi", ["0x34", "1", "255"])
def test_reserved_spi_is_accepted_with_a_warning(tmp_path, spi):
    said: list[str] = []
    sa, = load_sa_file(write(tmp_path, one_sa(spi=spi)), warn=said.append)
    assert sa.spi == int(spi, 0)
    assert len(said) == 1 and f"sas[0] (spi 0x{sa.spi:x}): spi: 0x{sa.spi:x} is in 1..255, reserved" in said[0]


def test_first_negotiable_spi_gives_no_warning(tmp_path):
    said: list[str] = []
    load_sa_file(write(tmp_path, one_sa(spi="0x100")), warn=said.append)
    assert said == []


def test_reserved_spi_limit_is_the_one_negotiation_keeps_to():
    """The fastpath cannot import control's constant, so it holds the same RFC 4303 number itself."""
    from control.ike.constants import MIN_NEGOTIATED_SPI
    from fastpath.sa_file import FIRST_UNRESERVED_SPI

    assert FIRST_UNRESERVED_SPI == MIN_NEGOTIATED_SPI
