"""The C batch ESP engine with OpenSSL libcrypto as crypto back end (fastpath._esp_openssl)."""

from __future__ import annotations

from fastpath.engines.cbatch import CBatchEngine, load_module, probe_module

MODULE = "fastpath._esp_openssl"
ffi, lib, _IMPORT_ERROR = load_module(MODULE)


def probe() -> tuple[bool, str]:
    """Whether the compiled module loads here, with its OpenSSL version or the reason."""
    return probe_module(MODULE, ffi, lib, _IMPORT_ERROR)


class OpenSSLEngine(CBatchEngine):
    """ESP over batches in C; crypto by OpenSSL EVP with per-SA key schedules, one packet after another."""

    name = "openssl"
    _ffi, _lib, _import_error = ffi, lib, _IMPORT_ERROR


__all__ = ["OpenSSLEngine", "probe", "ffi", "lib"]
