"""What the daemon's logs and ``list-sas`` call negotiated things: proposals, selectors, notifies."""

from __future__ import annotations

from typing import Any

from control.ike.constants import DhGroup, Encr, Integ, Notify, Prf
from control.ike.ts import ts_text

__all__ = ["notify_text", "ike_proposal_name", "esp_proposal_name", "ts_text"]


def notify_text(n: int) -> str:
    try:
        return Notify(n).name
    except ValueError:
        return f"notify {n}" if n else "no notify"


def ike_proposal_name(suite: Any) -> str:
    """A chosen IKE proposal as IANA names: AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE25519."""
    def name(enum_cls: Any, v: int) -> str:
        try:
            return enum_cls(v).name
        except ValueError:
            return str(v)
    parts = [name(Encr, suite.encr) + (f"_{suite.key_bits}" if suite.key_bits else "")]
    if suite.integ:
        parts.append(name(Integ, suite.integ))
    parts += ["PRF_" + name(Prf, suite.prf), name(DhGroup, suite.dh)]
    return "/".join(parts)


def esp_proposal_name(suite: Any) -> str:
    """A CHILD SA's algorithms as list-sas and the log show them; an AH SA's start with "AH/"."""
    if getattr(suite, "proto", "esp") == "ah":
        return f"AH/{suite.integ}" + ("/ESN" if suite.esn else "")
    return suite.enc + (f"/{suite.integ}" if suite.integ else "") + ("/ESN" if suite.esn else "")
