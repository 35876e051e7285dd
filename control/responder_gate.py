"""The responder's front door: what a new IKE_SA_INIT request must pass before any IKE state is made for it.

Today's rule is a cap on half-open IKE SAs (``HALF_OPEN_MAX``), each dropped after
``HALF_OPEN_TIMEOUT`` if it never completes IKE_AUTH, and a retransmitted request reaches the
half-open SA it already made.  ``cookies`` plugs in the stateless COOKIE challenge of RFC 7296 §2.6
(``control.ike.cookie.ResponderGate``): with one set, every new request is also put to its
``check`` and its COOKIE reply, if any, is sent back from the port the request came in on.  The
daemon runs without one until configuration gives it thresholds.
"""

from __future__ import annotations

from typing import NamedTuple

from control.ike.cookie import ResponderGate
from control.ike.events import Address, Datagram

__all__ = ["AdmissionGate", "Admission", "HALF_OPEN_MAX", "HALF_OPEN_TIMEOUT"]

HALF_OPEN_TIMEOUT = 30.0        # responder SAs that never finish IKE_AUTH are dropped after this
HALF_OPEN_MAX = 1024            # beyond this, new IKE_SA_INIT requests are dropped


class Admission(NamedTuple):
    let_in: bool
    reply: Datagram | None      # sent back whether or not the request is let in
    refused: str | None         # the daemon's counter for a refusal


_LET_IN = Admission(True, None, None)


class AdmissionGate:
    def __init__(self, *, max_half_open: int = HALF_OPEN_MAX, cookies: ResponderGate | None = None):
        self.max_half_open = max_half_open
        self.cookies = cookies
        self._half_open: dict[tuple[bytes, str], bytes] = {}    # (initiator SPI, peer address) -> our SPI

    def known(self, spi_i: bytes, remote: Address) -> bytes | None:
        """Our SPI of the half-open IKE SA a retransmitted request made already."""
        return self._half_open.get((spi_i, remote[0]))

    def admit(self, data: bytes, local_port: int, remote: Address, now: float) -> Admission:
        """Whether to make an IKE SA for a new IKE_SA_INIT request, and what to answer it with."""
        n = len(self._half_open)
        if n >= self.max_half_open:
            return Admission(False, None, "half_open_full")
        if self.cookies is not None:
            ok, reply = self.cookies.check(data, local_port, remote, now, n)
            return Admission(ok, reply, None if ok else "cookie_gate")
        return _LET_IN

    def opened(self, spi_i: bytes, remote: Address, our_spi: bytes) -> None:
        self._half_open[(spi_i, remote[0])] = our_spi

    def closed(self, our_spi: bytes) -> None:
        """The IKE SA is established or gone: it no longer counts as half-open."""
        for k, v in list(self._half_open.items()):
            if v == our_spi:
                del self._half_open[k]

    def __len__(self) -> int:
        return len(self._half_open)
