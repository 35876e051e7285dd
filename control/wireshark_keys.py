"""The daemon's SA keys as Wireshark's IKEv2 and ESP decryption tables (``ipsecgw export-keys``).

The format is that of strongSwan's save-keys plugin: Wireshark's ``ikev2_decryption_table``
and ``esp_sa`` UAT files.  Only the control socket's ``export-keys`` command (root, and
``gateway.export_keys: yes``) calls this; nothing here logs a key.
"""

from __future__ import annotations

from collections.abc import Iterable

from control.ike.constants import Encr, Integ
from control.sa_records import ChildEntry, IkeEntry
from control.sa_text import ike_proposal_name

__all__ = ["wireshark_tables"]

_WS_IKE_ENCR = {Encr.AES_CBC: "AES-CBC-{bits} [RFC3602]", Encr.AES_GCM_8: "AES-GCM-{bits} with 8 octet ICV [RFC5282]",
                Encr.AES_GCM_12: "AES-GCM-{bits} with 12 octet ICV [RFC5282]",
                Encr.AES_GCM_16: "AES-GCM-{bits} with 16 octet ICV [RFC5282]"}
_WS_IKE_INTEG = {Integ.NONE: "NONE [RFC4306]", Integ.HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
                 Integ.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
                 Integ.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
                 Integ.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]"}
_WS_GCM16 = "AES-GCM with 16 octet ICV [RFC4106]"
_WS_ESP_ENC = {"aes-gcm-128": _WS_GCM16, "aes-gcm-192": _WS_GCM16, "aes-gcm-256": _WS_GCM16,
               "aes-cbc-128": "AES-CBC [RFC3602]",
               "aes-cbc-192": "AES-CBC [RFC3602]", "aes-cbc-256": "AES-CBC [RFC3602]", "null": "NULL"}
_WS_ESP_INTEG = {None: "NULL", "hmac-sha256-128": "HMAC-SHA-256-128 [RFC4868]",
                 "hmac-sha384-192": "HMAC-SHA-384-192 [RFC4868]", "hmac-sha512-256": "HMAC-SHA-512-256 [RFC4868]",
                 "hmac-sha1-96": "HMAC-SHA-1-96 [RFC2404]"}


def wireshark_tables(ike_sas: Iterable[IkeEntry], children: Iterable[ChildEntry]) -> dict[str, str]:
    """Wireshark's ``ikev2_decryption_table`` and ``esp_sa`` UAT files, as strongSwan's save-keys writes them.

    Algorithms Wireshark cannot decrypt (ChaCha20-Poly1305, AES-GMAC) appear as comment lines.
    """
    ike_lines, esp_lines = [], []
    for e in ike_sas:
        keys, suite = e.ike.keys, e.ike.suite
        if keys is None or suite is None or e.established is None:
            continue
        enc = _WS_IKE_ENCR.get(suite.encr)
        integ = _WS_IKE_INTEG.get(suite.integ)
        if enc is None or integ is None:
            ike_lines.append(f"# {e.conn.name}: {ike_proposal_name(suite)} is not in Wireshark's IKEv2 table")
            continue
        ike_lines.append(f'{e.ike.spi_i.hex()},{e.ike.spi_r.hex()},{keys.sk_ei.hex()},{keys.sk_er.hex()},'
                         f'"{enc.format(bits=suite.key_bits)}",{keys.sk_ai.hex()},{keys.sk_ar.hex()},"{integ}"')
    for c in children:
        if c.keys is None:
            continue
        for sa in c.keys:
            if sa.is_ah:
                # esp_sa is the ESP dissector's table: an AH SA written there would read as ESP-NULL
                esp_lines.append(f"# {c.name} SPI 0x{sa.spi:08x}: AH ({sa.integ}) has no place in Wireshark's "
                                 "ESP table")
                continue
            enc, integ = _WS_ESP_ENC.get(sa.enc), _WS_ESP_INTEG.get(sa.integ)
            if enc is None or integ is None:
                esp_lines.append(f"# {c.name} SPI 0x{sa.spi:08x}: {sa.enc} is not in Wireshark's ESP table")
                continue
            fam = f"IPv{sa.src.version}"
            ikey = f"0x{sa.integ_key.hex()}" if sa.integ_key else ""
            esp_lines.append(f'"{fam}","{sa.src}","{sa.dst}","0x{sa.spi:08x}","{enc}","0x{sa.enc_key.hex()}",'
                             f'"{integ}","{ikey}"')
    return {"ikev2_decryption_table": "".join(line + "\n" for line in ike_lines),
            "esp_sa": "".join(line + "\n" for line in esp_lines)}
