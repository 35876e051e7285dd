"""The C batch ESP engine with intel-ipsec-mb as crypto back end (fastpath._esp_ipsecmb).

intel-ipsec-mb runs AES-CBC+HMAC and ChaCha20-Poly1305 packets in parallel
lanes (SIMD multi-buffer) and AES-GCM/GMAC with its AVX2/AVX-512/VAES code;
the framing is the same C core as the OpenSSL engine's.
"""

from __future__ import annotations

from fastpath.engines.cbatch import CBatchEngine, load_module, probe_module

MODULE = "fastpath._esp_ipsecmb"
ffi, lib, _IMPORT_ERROR = load_module(MODULE)


def probe() -> tuple[bool, str]:
    """Whether the compiled module loads here, with the library version and instruction set, or the reason."""
    ok, detail = probe_module(MODULE, ffi, lib, _IMPORT_ERROR)
    if ok and "no usable instruction set" in detail:
        return False, detail
    return ok, detail


class IpsecMbEngine(CBatchEngine):
    """ESP over batches in C; crypto by intel-ipsec-mb with per-SA expanded keys, a whole batch per submit."""

    name = "ipsec-mb"
    _ffi, _lib, _import_error = ffi, lib, _IMPORT_ERROR


__all__ = ["IpsecMbEngine", "probe", "ffi", "lib"]
