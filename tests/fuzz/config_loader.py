"""Fuzz target: the configuration loader, through the entry ``ipsecgw check`` uses (``load_config`` on a
file; control/verbs/run.py).

An input is the file's bytes.  The custom mutator reads them as YAML and edits the tree: a key dropped,
duplicated, renamed or moved, a value retyped (list for scalar, mapping for list, null, bool), a huge or
negative number, a bad address, CIDR, port, duration or proposal, unicode; the tree is written back as
YAML.  Text that does not load as YAML gets libFuzzer's byte mutations (so YAML syntax errors, tabs,
anchors and bad UTF-8 are fuzzed as well).

Oracle: the file loads, or ``ConfigError`` comes out with each problem naming the file and saying what
was expected; any other exception is a crash.

Seeds: examples/*.yaml and the configurations the daemon tests write (support.daemon_harness).
"""

from __future__ import annotations

import copy
import random
import tempfile
from pathlib import Path

import atheris
import yaml
from support.daemon_harness import gateway_yaml

from control.config import ConfigError, load_config
from fuzz.harness import FuzzFailure

ROOT = Path(__file__).resolve().parents[2]
_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
FILE = _DIR / "gw.yaml"

# what a problem line must say besides where: what was expected there, that the text is not YAML at all,
# or which key is there twice
SAYS_WHAT = ("expected", "not valid YAML", "appears twice")
ODD_VALUES = [
    None, True, False, 0, -1, 1, 65535, 65536, 2**31, 2**63, 2**64 + 1, -2**63, 1e308, float("nan"), float("inf"),
    "", " ", "%any", "%any6", "0.0.0.0", "255.255.255.255", "192.0.2.300", "::", "fe80::1%eth0", "2001:db8::/129",
    "10.0.0.0/33", "10.0.0.0/8[tcp/443]", "10.0.0.0/8[udp/70000]", "10.0.0.0/8[999/1]", "10.1.2.3/16",
    "1.2.3.4-1.2.3.0", "abc", "0s", "-5s", "1h", "99999999999d", "10x", "aes128gcm16", "aes999-sha1-modp1",
    "aes128gcm16-prfsha256-x25519-", "-", "yes", "no", "auto", "tunnel", "transport", "psk", "pubkey",
    "0x" + "f" * 40, "\u00e9\u00e8", "\u202e\u0000", "\ud7ff", "a" * 5000, "/dev/null", "/nonexistent/x.pem",
    [], {}, [None], ["a", 1, None], {"a": {"b": {"c": 1}}},
]


def one_input(data: bytes) -> None:
    FILE.write_bytes(data)
    try:
        load_config(FILE)
    except ConfigError as exc:
        if not exc.problems:
            raise FuzzFailure("ConfigError without a problem") from exc
        for line in exc.problems:
            if not line.startswith(str(FILE)) or not any(w in line for w in SAYS_WHAT):
                raise FuzzFailure(f"a problem that does not say where and what was expected: {line!r}") from exc


# ---- the tree mutator -----------------------------------------------------------------------------------

def _paths(node, seen: set[int] | None = None):
    """Every (container, key) in the tree, each container once (an edit may have made it a graph)."""
    seen = set() if seen is None else seen
    if isinstance(node, (dict, list)):
        if id(node) in seen:
            return
        seen.add(id(node))
    if isinstance(node, dict):
        for k, v in list(node.items()):
            yield node, k
            yield from _paths(v, seen)
    elif isinstance(node, list):
        for i, v in enumerate(list(node)):
            yield node, i
            yield from _paths(v, seen)


def _odd(rng: random.Random, old):
    if isinstance(old, int) and not isinstance(old, bool) and rng.randrange(2):
        return rng.choice([old * 1000003, -old, old + 1, old - 1, 2**rng.randrange(80)])
    if isinstance(old, str) and rng.randrange(3) == 0:
        k = rng.randrange(len(old) + 1)
        return old[:k] + rng.choice(["x", "/", ".", "-", "\u00e9", "0", " ", ":", "%"]) + old[k:]
    if isinstance(old, list) and old and rng.randrange(2):
        return old[0]                                     # a scalar where a list was
    if not isinstance(old, (dict, list)) and rng.randrange(4) == 0:
        return [old]                                      # a list where a scalar was
    return rng.choice(ODD_VALUES)


def mutate_tree(tree, rng: random.Random):
    """One edit somewhere in the tree (a copy of it is changed in place and returned)."""
    spots = list(_paths(tree))
    if not spots:
        return rng.choice(ODD_VALUES)
    box, key = rng.choice(spots)
    choice = rng.randrange(6)
    if choice == 0 and isinstance(box, dict):             # a key gone
        del box[key]
    elif choice == 1 and isinstance(box, dict):           # renamed: a typo, a case, a stranger
        v = box.pop(key)
        box[rng.choice([str(key).upper(), str(key) + "s", str(key)[:-1], "unknown", 7, None, True])] = v
    elif choice == 2:                                     # the same value twice / moved elsewhere
        # mostly a copy; sometimes the same object, which YAML writes as an anchor and alias (and, when
        # it lands inside itself, as an alias of itself)
        v = box[key] if rng.randrange(4) == 0 else copy.deepcopy(box[key])
        other, okey = rng.choice(spots)
        if isinstance(other, dict):
            other[str(okey) + "_copy" if rng.randrange(2) else okey] = v
        elif isinstance(other, list):
            other.append(v)
    elif choice == 3 and isinstance(box, list):
        box.append(box[key] if rng.randrange(2) else rng.choice(ODD_VALUES))
    else:
        box[key] = _odd(rng, box[key])
    return tree


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.randrange(8) == 0:
        return atheris.Mutate(data, max_size)
    try:
        tree = yaml.safe_load(data.decode())
    except Exception:  # noqa: BLE001 - any text that is not YAML: byte mutations
        return atheris.Mutate(data, max_size)
    for _ in range(rng.randrange(1, 4)):
        tree = mutate_tree(tree, rng)
    try:
        out = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False).encode()
    except Exception:  # noqa: BLE001 - a tree the dumper cannot write
        return atheris.Mutate(data, max_size)
    return out[:max_size]


def seeds() -> list[bytes]:
    out = [p.read_bytes() for p in sorted((ROOT / "examples").glob("*.yaml"))]
    t = Path("/run/ipsecgw-fuzz")
    out.append(gateway_yaml(shm=t / "gw.shm", sock=t / "gw.sock", ike_port=500, natt_port=4500, local="192.0.2.1",
                            remote="192.0.2.2", remote_port=500, remote_natt_port=4500, local_id="gw-a.example",
                            remote_id="gw-b.example", local_ts="10.1.0.0/16", remote_ts="10.2.0.0/16",
                            start_action="trap").encode())
    out.append(gateway_yaml(shm=t / "gw.shm", sock=t / "gw.sock", ike_port=500, natt_port=4500, local="2001:db8::1",
                            remote='"%any"', remote_port=500, remote_natt_port=4500, local_id="'@a'", remote_id="b@c",
                            local_ts="fd00:1::/64", remote_ts="0.0.0.0/0", start_action="none",
                            ike="aes256-sha384-ecp384", esp="aes256-sha256-esn").encode())
    return out
