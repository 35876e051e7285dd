"""ESP anti-replay window with extended sequence number inference.

RFC 4303 3.4.3 and Appendix A.  The receiver keeps the highest accepted
64-bit sequence number ``top`` and a bitmap of the ``window`` numbers ending
at it.  Use is two-phase, because the replay state may only change once the
ICV has been verified:

    seq = w.check(seq_lo)        # before crypto: None means drop as REPLAY
    ... verify ICV ...
    if not w.update(seq): ...    # after ICV success: False means REPLAY

With ESN only the low 32 bits travel in the packet; ``check`` infers the high
half from where ``top`` is, assuming the sender is no more than 2^32 - W
ahead and no more than W - 1 behind.
"""

from __future__ import annotations

from cdefs.sa import REPLAY_WINDOW_MAX

SEQ32_MAX = 2**32 - 1
SEQ64_MAX = 2**64 - 1
# Appendix A needs a window size to place the epoch boundary even when
# anti-replay is off (docs/esp.md: 64 then).
INFERENCE_WINDOW_OFF = 64


class ReplayWindow:
    """Receive-side sequence state of one inbound SA.

    ``window`` 0 disables replay checks but still tracks ``top`` (ESN
    inference needs it and it is reported as the highest sequence seen).
    """

    __slots__ = ("window", "esn", "top", "_bits", "_mask")

    def __init__(self, window: int = 64, esn: bool = False, top: int = 0):
        """``top``: the number just below the first one expected (nothing is marked)."""
        if not 0 <= window <= REPLAY_WINDOW_MAX:
            raise ValueError(f"replay window must be 0..{REPLAY_WINDOW_MAX}, got {window}")
        self.window = window
        self.esn = esn
        self.top = top
        # Bit i set: sequence number top - i has been accepted.  A Python int
        # is a fine bitmap at 4096 bits and shifts without a loop.
        self._bits = 0
        self._mask = (1 << window) - 1

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def infer(self, seq_lo: int) -> int | None:
        """The 64-bit sequence number for a received low half (ESN), else ``seq_lo``.

        None when the inferred number is 0 or past 2^64 - 1.
        """
        if not self.esn:
            return seq_lo
        w = self.window or INFERENCE_WINDOW_OFF
        th, tl = self.top >> 32, self.top & SEQ32_MAX
        bottom = (tl - w + 1) & SEQ32_MAX
        if tl >= w - 1:
            # Window lies inside one epoch: a low half below it has wrapped.
            hi = th if seq_lo >= bottom else th + 1
        else:
            # Window straddles the epoch boundary: a high low-half belongs
            # to the previous epoch.
            hi = th - 1 if seq_lo >= bottom else th
        # There is no epoch below 0: while the window still reaches below
        # zero, a high low-half can only be a forward jump within epoch 0
        # (the ICV, which covers the high half, then decides).
        hi = max(hi, 0)
        seq = (hi << 32) | seq_lo
        return seq if 0 < seq <= SEQ64_MAX else None

    def _seen(self, seq: int) -> bool | None:
        """True if marked, None if older than the window, False otherwise."""
        if seq > self.top:
            return False
        diff = self.top - seq
        if diff >= self.window:
            return None
        return bool((self._bits >> diff) & 1)

    def check(self, seq_lo: int) -> int | None:
        """Pre-check before any crypto: the 64-bit sequence number, or None (REPLAY)."""
        seq = self.infer(seq_lo)
        if not seq:
            return None
        if self.enabled and self._seen(seq) is not False:
            return None
        return seq

    def update(self, seq: int) -> bool:
        """Record an authenticated packet; False if it turned out to be a replay."""
        if seq <= 0 or seq > SEQ64_MAX:
            return False
        if not self.enabled:
            self.top = max(self.top, seq)
            return True
        if seq > self.top:
            shift = seq - self.top
            # A jump of a whole window or more leaves only the new bit.
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.window else 1
            self.top = seq
            return True
        if self._seen(seq) is not False:
            return False
        self._bits |= 1 << (self.top - seq)
        return True
