"""ESP engines and their discovery.

Each engine is listed with whether it can run here and, if not, why; callers
pick one by name or take ``best``: the fastest present engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from fastpath.engines.base import Engine, EngineError, SAStats

__all__ = ["Engine", "EngineError", "SAStats", "EngineInfo", "discover", "create", "present_names", "known_names"]


@dataclass
class EngineInfo:
    name: str
    present: bool
    detail: str         # version/backend when present, the reason when not
    algorithms: tuple[str, ...] = ()
    ah_algorithms: tuple[str, ...] = ()     # AH integrity algorithms; () for an engine without AH


# Fastest first: "best" takes the first present engine.
_CANDIDATES: list[tuple[str, str, str]] = [
    ("ipsec-mb", "fastpath.engines.ipsecmb", "IpsecMbEngine"),
    ("openssl", "fastpath.engines.openssl", "OpenSSLEngine"),
    ("reference", "fastpath.engines.reference", "ReferenceEngine"),
]


def _load(module: str, cls: str) -> tuple[Callable[[], Engine] | None, str, tuple[str, ...], tuple[str, ...]]:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return None, f"not available: {exc}", (), ()
    factory = getattr(mod, cls)
    probe = getattr(mod, "probe", None)
    if probe is not None:
        ok, detail = probe()
        if not ok:
            return None, detail, (), ()
    else:
        detail = ""
    return factory, detail, tuple(getattr(factory, "algorithms", ())), tuple(getattr(factory, "ah_algorithms", ()))


def discover() -> list[EngineInfo]:
    out = []
    for name, module, cls in _CANDIDATES:
        factory, detail, algs, ah_algs = _load(module, cls)
        out.append(EngineInfo(name, factory is not None, detail, algs, ah_algs))
    return out


def known_names() -> list[str]:
    """Every engine this build knows, present here or not, fastest first."""
    return [n for n, _, _ in _CANDIDATES]


def present_names() -> list[str]:
    return [i.name for i in discover() if i.present]


def create(name: str = "best", capacity: int = 1024) -> Engine:
    """Instantiate an engine by name, or the fastest present one for ``best``."""
    known = known_names()
    if name != "best" and name not in known:
        raise EngineError(f"unknown engine {name!r}; expected best or one of {', '.join(known)}")
    for cand, module, cls in _CANDIDATES:
        if name not in ("best", cand):
            continue
        factory, detail, _, _ = _load(module, cls)
        if factory is None:
            if name == cand:
                raise EngineError(f"engine {cand} is not available here: {detail}")
            continue
        return factory(capacity=capacity)
    raise EngineError("no ESP engine is available")
