"""Per-packet statuses the engines write, shared with C through cdefs/esp/esp.h."""

from __future__ import annotations

import enum

from cdefs import defines

_D = defines("esp.h")


class Status(enum.IntEnum):
    """What happened to one packet of a batch (also a per-SA drop reason)."""

    OK = _D["IPSG_ST_OK"]
    NOT_ESP = _D["IPSG_ST_NOT_ESP"]
    NO_SA = _D["IPSG_ST_NO_SA"]
    AUTH_FAILED = _D["IPSG_ST_AUTH_FAILED"]
    REPLAY = _D["IPSG_ST_REPLAY"]
    MALFORMED = _D["IPSG_ST_MALFORMED"]
    PADDING = _D["IPSG_ST_PADDING"]
    SELECTOR = _D["IPSG_ST_SELECTOR"]
    SEQ_EXHAUSTED = _D["IPSG_ST_SEQ_EXHAUSTED"]
    HARD_EXPIRED = _D["IPSG_ST_HARD_EXPIRED"]
    TOO_BIG = _D["IPSG_ST_TOO_BIG"]
    DUMMY = _D["IPSG_ST_DUMMY"]
    ECN = _D["IPSG_ST_ECN"]
    FRAGMENT = _D["IPSG_ST_FRAGMENT"]
    INTERNAL = _D["IPSG_ST_INTERNAL"]

    @property
    def label(self) -> str:
        """Operator-facing name: auth-failed, no-sa, ..."""
        return self.name.lower().replace("_", "-")


N_STATUS = _D["IPSG_ST_MAX"]


class SAFlag(enum.IntFlag):
    SOFT_EXPIRED = _D["IPSG_SAF_SOFT_EXPIRED"]
    HARD_EXPIRED = _D["IPSG_SAF_HARD_EXPIRED"]
    SEQ_EXHAUSTED = _D["IPSG_SAF_SEQ_EXHAUSTED"]
