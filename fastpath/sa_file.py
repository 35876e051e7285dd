"""Static SA files (YAML) -> ``cdefs.sa.SA`` objects.

Every problem becomes one ``SAFileError`` whose message names the file, the SA
(index and SPI when known) and the field, and says what was expected.  Key
material never appears in a message: keys are described by their length only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cdefs.algorithms import AEAD_NAMES, AH_INTEG_ALGS, CIPHER_NAMES, ENC_ALGS, INTEG_ALGS
from cdefs.sa import PROTOCOLS, SA, Lifetime, Mode, SAError, TrafficSelector

__all__ = ["SAFileError", "load_sa_file", "parse_sas"]

# RFC 4303 2.1: SPIs 1..255 are reserved for IANA, so negotiation starts here (control.ike.constants
# MIN_NEGOTIATED_SPI: the same number, which this layer cannot import; tests/unit/test_sa_file.py keeps them equal)
FIRST_UNRESERVED_SPI = 256

SA_FIELDS = (
    "spi", "src", "dst", "proto", "mode", "aead", "key", "cipher", "cipher_key", "integrity", "integrity_key",
    "esn", "seq", "replay_window", "encap", "sport", "dport", "ttl", "df", "dscp", "ecn", "flowlabel",
    "local_ts", "remote_ts", "lifetime",
)
_KEY_FIELDS = ("key", "cipher_key", "integrity_key")
_LIFETIME_FIELDS = tuple(vars(Lifetime()))
_TS_FIELDS = ("net", "proto", "ports")
_PROTO_NAMES = {"any": 0, "icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132}
_HEX = re.compile(r"[0-9a-fA-F]*")


class SAFileError(ValueError):
    """A static SA file cannot be used; the message is ready for the operator."""


class _FieldError(Exception):
    """Raised while converting one SA; the caller adds file and SA context."""

    def __init__(self, field_name: str, expected: str, got: str | None = None):
        self.field = field_name
        self.text = f"{field_name}: expected {expected}" + (f", got {got}" if got is not None else "")
        super().__init__(self.text)


# --- YAML loading -----------------------------------------------------------
# YAML 1.1 turns 0x00ab... into an int (dropping leading zero bytes of a key),
# 0100 into octal and 10:20 into base 60.  Scalars resolved as ints keep their
# source text so each field can be read the way an operator means it.

class _RawInt(int):
    raw: str


class _NullText(str):
    """An explicit ``null``/``~`` (so ``cipher: null`` means the NULL cipher)."""


class _Loader(yaml.SafeLoader):
    pass


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    value = _RawInt(yaml.SafeLoader.construct_yaml_int(loader, node))
    value.raw = node.value
    return value


def _construct_null(loader: _Loader, node: yaml.ScalarNode) -> Any:
    return _NullText(node.value) if node.value else None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str) and key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:null", _construct_null)
_Loader.construct_mapping = _construct_mapping  # type: ignore[method-assign]


def _text(v: Any) -> str | None:
    """The source text of a scalar that YAML may have turned into a number."""
    if isinstance(v, _RawInt):
        return v.raw
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def _describe(v: Any) -> str:
    """A short, key-free description of a wrong value for messages."""
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, _RawInt):
        return v.raw
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, str):
        return repr(v) if len(v) <= 40 else repr(v[:37] + "...")
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    return type(v).__name__


# --- field converters ---------------------------------------------------------

def _int(name: str, v: Any, lo: int, hi: int, what: str | None = None) -> int:
    what = what or f"an integer from {lo} to {hi}"
    text = _text(v)
    if isinstance(v, bool) or text is None:
        raise _FieldError(name, what, _describe(v))
    t = text.strip().replace("_", "")
    try:
        n = int(t, 16) if t.lower().startswith("0x") else int(t, 10)
    except ValueError:
        raise _FieldError(name, what, _describe(v)) from None
    if not lo <= n <= hi:
        raise _FieldError(name, what, _describe(v))
    return n


def _choice(name: str, v: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise _FieldError(name, "one of " + ", ".join(choices), _describe(v))
    return str(v)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _FieldError(name, "true or false", _describe(v))
    return v


def _addr(name: str, v: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = _text(v)
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        raise _FieldError(name, "an IPv4 or IPv6 address", _describe(v)) from None


def _key(name: str, v: Any) -> bytes:
    what = "a hex string (0x prefix optional) with an even number of digits"
    text = _text(v)
    if text is None:
        raise _FieldError(name, what, "nothing" if v is None else type(v).__name__)
    t = text.strip()
    if t[:2].lower() == "0x":
        t = t[2:]
    # Never echo the value: say only what is wrong with it.
    if not t:
        raise _FieldError(name, what, "an empty value")
    if not _HEX.fullmatch(t):
        raise _FieldError(name, what, "a value with non-hex characters")
    if len(t) % 2:
        raise _FieldError(name, what, f"{len(t)} digits")
    return bytes.fromhex(t)


def _ports(name: str, v: Any) -> tuple[int, int]:
    what = "a port or a range lo-hi within 0-65535"
    text = _text(v)
    if isinstance(v, bool) or text is None:
        raise _FieldError(name, what, _describe(v))
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise _FieldError(name, what, _describe(v))
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if not lo <= hi <= 65535:
        raise _FieldError(name, what, _describe(v))
    return lo, hi


def _proto(name: str, v: Any) -> int:
    if isinstance(v, str) and not isinstance(v, _NullText) and v.lower() in _PROTO_NAMES:
        return _PROTO_NAMES[v.lower()]
    return _int(name, v, 0, 255, "a protocol number 0-255 or one of " + ", ".join(_PROTO_NAMES))


def _selectors(name: str, v: Any) -> list[TrafficSelector]:
    if not isinstance(v, list):
        raise _FieldError(name, "a list of CIDR strings or {net, proto, ports} mappings", _describe(v))
    out = []
    for i, item in enumerate(v):
        where = f"{name}[{i}]"
        if isinstance(item, dict):
            unknown = [k for k in item if k not in _TS_FIELDS]
            if unknown:
                raise _FieldError(f"{where}.{unknown[0]}", "one of the keys " + ", ".join(_TS_FIELDS),
                                  "an unknown key")
            if "net" not in item:
                raise _FieldError(f"{where}.net", "a CIDR network such as 10.0.0.0/8", "nothing")
            net = item["net"]
            proto = _proto(f"{where}.proto", item["proto"]) if "proto" in item else 0
            lo, hi = _ports(f"{where}.ports", item["ports"]) if "ports" in item else (0, 65535)
            where += ".net"
        else:
            net, proto, lo, hi = item, 0, 0, 65535
        text = _text(net)
        try:
            out.append(TrafficSelector.from_network((text or "").strip(), proto, lo, hi))
        except ValueError:
            raise _FieldError(where, "a CIDR network such as 10.0.0.0/8", _describe(net)) from None
    return out


def _lifetime(v: Any) -> Lifetime:
    if not isinstance(v, dict):
        raise _FieldError("lifetime", "a mapping of " + ", ".join(_LIFETIME_FIELDS), _describe(v))
    values = {}
    for k, x in v.items():
        if k not in _LIFETIME_FIELDS:
            raise _FieldError(f"lifetime.{k}", "one of the keys " + ", ".join(_LIFETIME_FIELDS), "an unknown key")
        values[k] = _int(f"lifetime.{k}", x, 0, 2**64 - 1, "a non-negative integer (0 = no limit)")
    return Lifetime(**values)


def _sa_from_mapping(d: dict) -> SA:
    """Convert one SA mapping; raises _FieldError."""
    for k in d:
        if k not in SA_FIELDS:
            raise _FieldError(str(k), "a known SA field (" + ", ".join(SA_FIELDS) + ")", "an unknown key")
    for req in ("spi", "src", "dst"):
        if req not in d:
            raise _FieldError(req, "a value (required)", "nothing")

    spi = _int("spi", d["spi"], 1, 0xFFFFFFFF, "an integer from 1 to 0xffffffff (0 is reserved)")
    kw: dict[str, Any] = {"spi": spi, "src": _addr("src", d["src"]), "dst": _addr("dst", d["dst"])}

    proto = _choice("proto", d["proto"], PROTOCOLS) if "proto" in d else "esp"
    if proto == "ah":
        _ah_fields(d, kw)
    elif ("aead" in d) == ("cipher" in d):
        raise _FieldError("aead", "exactly one of aead (with key) or cipher (with cipher_key and integrity)",
                          "both" if "aead" in d else "neither")
    elif "aead" in d:
        kw["enc"] = _choice("aead", d["aead"], AEAD_NAMES)
        for other in ("cipher_key", "integrity", "integrity_key"):
            if other in d:
                raise _FieldError(other, f"nothing: {kw['enc']} is an AEAD; its key (with salt) goes in key",
                                  "a value")
        if "key" not in d:
            raise _FieldError("key", f"{ENC_ALGS[kw['enc']].config_key_len} bytes for {kw['enc']}", "nothing")
        kw["enc_key"] = _key("key", d["key"])
    else:
        # An explicit YAML null is the NULL cipher; an empty value is a mistake.
        cipher = d["cipher"]
        kw["enc"] = _choice("cipher", "null" if isinstance(cipher, _NullText) else cipher, CIPHER_NAMES)
        if "key" in d:
            raise _FieldError("key", "nothing: with cipher the keys are cipher_key and integrity_key", "a value")
        alg = ENC_ALGS[kw["enc"]]
        if "cipher_key" in d:
            kw["enc_key"] = _key("cipher_key", d["cipher_key"])
        elif alg.config_key_len:
            raise _FieldError("cipher_key", f"{alg.config_key_len} bytes for {alg.name}", "nothing")
        else:
            kw["enc_key"] = b""
        if "integrity" not in d:
            raise _FieldError("integrity", "one of " + ", ".join(INTEG_ALGS) + f" with {alg.name}", "nothing")
        kw["integ"] = _choice("integrity", d["integrity"], tuple(INTEG_ALGS))
        if "integrity_key" not in d:
            raise _FieldError("integrity_key", f"{INTEG_ALGS[kw['integ']].key_len} bytes for {kw['integ']}",
                              "nothing")
        kw["integ_key"] = _key("integrity_key", d["integrity_key"])

    if "mode" in d:
        kw["mode"] = Mode(_choice("mode", d["mode"], tuple(m.value for m in Mode)))
    if "esn" in d:
        kw["esn"] = _bool("esn", d["esn"])
    if "seq" in d:
        hi = 2**64 - 1 if kw.get("esn") else 2**32 - 1
        kw["seq"] = _int("seq", d["seq"], 1, hi)
    if "replay_window" in d:
        kw["replay_window"] = _int("replay_window", d["replay_window"], 0, 4096)
    if "encap" in d:
        kw["udp_encap"] = _choice("encap", d["encap"], ("none", "udp")) == "udp"
    for port in ("sport", "dport"):
        if port in d:
            kw[port] = _int(port, d[port], 1, 65535)
    if "ttl" in d:
        kw["ttl"] = _int("ttl", d["ttl"], 1, 255)
    if "df" in d:
        kw["df"] = _choice("df", d["df"], ("copy", "set", "clear"))
    if "dscp" in d:
        kw["dscp"] = None if d["dscp"] == "copy" else _int("dscp", d["dscp"], 0, 63, "copy or an integer from 0 to 63")
    if "ecn" in d:
        kw["ecn"] = _choice("ecn", d["ecn"], ("normal", "compat"))
    if "flowlabel" in d:
        kw["flowlabel"] = _choice("flowlabel", d["flowlabel"], ("copy", "zero"))
    for ts in ("local_ts", "remote_ts"):
        if ts in d:
            kw[ts] = _selectors(ts, d[ts])
    if "lifetime" in d:
        kw["lifetime"] = _lifetime(d["lifetime"])

    try:
        return SA(**kw)
    except SAError as exc:
        raise _model_error(exc, kw) from None


def _ah_fields(d: dict, kw: dict) -> None:
    """An AH SA's algorithm and key: integrity and integrity_key only (AH encrypts nothing)."""
    for other in ("aead", "key", "cipher", "cipher_key"):
        if other in d:
            raise _FieldError(other, "nothing: an AH SA authenticates only; give integrity and integrity_key",
                              "a value")
    if "encap" in d and d["encap"] != "none":
        raise _FieldError("encap", "none: AH cannot pass a NAT (UDP encapsulation carries ESP only)",
                          _describe(d["encap"]))
    names = tuple(AH_INTEG_ALGS)
    if "integrity" not in d:
        raise _FieldError("integrity", "one of " + ", ".join(names) + " (proto: ah)", "nothing")
    integ = _choice("integrity", d["integrity"], names)
    if "integrity_key" not in d:
        alg = AH_INTEG_ALGS[integ]
        extra = " (AES key + 4-byte salt)" if alg.salt_len else ""
        raise _FieldError("integrity_key", f"{alg.key_len} bytes for {integ}{extra}", "nothing")
    kw.update(proto="ah", enc="null", enc_key=b"", integ=integ,
              integ_key=_key("integrity_key", d["integrity_key"]))


def _model_error(exc: SAError, kw: dict) -> _FieldError:
    """Rename the model's field to the one the file uses; keep key values out."""
    name = exc.field
    if name == "enc":
        name = "aead" if ENC_ALGS.get(kw.get("enc", ""), None) and ENC_ALGS[kw["enc"]].aead else "cipher"
    elif name == "udp_encap":
        name = "encap"
    got = exc.got
    if name in _KEY_FIELDS:
        # The model reports key sizes as "N bytes"; anything else is not shown.
        shown = got if isinstance(got, str) and got.endswith(" bytes") else None
    else:
        shown = _describe(got) if got is not None else None
    return _FieldError(name, exc.expected, shown)


# --- file level ---------------------------------------------------------------

def parse_sas(doc: Any, source: str = "<sa file>", warn: Callable[[str], None] | None = None) -> list[SA]:
    """Turn a loaded YAML document into SAs; raises SAFileError. ``warn`` hears what is accepted but unusual."""
    if not isinstance(doc, dict) or "sas" not in doc:
        raise SAFileError(f"{source}: expected a mapping with a 'sas' list at the top level")
    extra = [k for k in doc if k != "sas"]
    if extra:
        raise SAFileError(f"{source}: {extra[0]}: expected only the top-level key 'sas', got an unknown key")
    items = doc["sas"]
    if not isinstance(items, list) or not items:
        raise SAFileError(f"{source}: sas: expected a non-empty list of SAs, got {_describe(items)}")
    sas: list[SA] = []
    for i, item in enumerate(items):
        where = f"{source}: sas[{i}]"
        if not isinstance(item, dict):
            raise SAFileError(f"{where}: expected a mapping of SA fields, got {_describe(item)}")
        try:
            spi = _int("spi", item["spi"], 0, 0xFFFFFFFF) if "spi" in item else None
        except _FieldError:
            spi = None
        if spi is not None:
            where += f" (spi 0x{spi:x})"
        try:
            sa = _sa_from_mapping(item)
        except _FieldError as exc:
            raise SAFileError(f"{where}: {exc.text}") from None
        for j, prev in enumerate(sas):
            # Inbound lookup is by SPI, then destination: the pair must be unique.
            if prev.spi == sa.spi and prev.dst == sa.dst:
                raise SAFileError(f"{where}: spi: expected an SPI not already used for dst {sa.dst}, "
                                  f"got the SPI of sas[{j}]")
        if sa.spi < FIRST_UNRESERVED_SPI and warn is not None:
            warn(f"{where}: spi: 0x{sa.spi:x} is in 1..255, reserved for IANA (RFC 4303 2.1); no negotiated SA "
                 "uses it, but captures and published test packets do, so it is accepted here")
        sas.append(sa)
    return sas


def load_sa_file(path: str | Path, warn: Callable[[str], None] | None = None) -> list[SA]:
    """Read and validate a YAML SA file; raises SAFileError with one operator-ready message."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SAFileError(f"{source}: cannot read SA file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SAFileError(f"{source}: expected a UTF-8 YAML file") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: YAML's own rendering quotes the
        # offending source line, which may hold a key.
        mark = exc.problem_mark or exc.context_mark
        pos = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise SAFileError(f"{source}: {pos}YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise SAFileError(f"{source}: YAML error: {type(exc).__name__}") from None
    return parse_sas(doc, source, warn)
