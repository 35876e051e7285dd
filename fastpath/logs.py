"""Logging set-up shared by every ipsecgw process (control, fastpath, supervisor).

It lives in the lowest layer that logs, so the fastpath needs nothing from control to start its own.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["setup_logging"]


def setup_logging(level: str, stream: Any = None) -> None:
    """Send the ``ipsecgw`` loggers' records at ``level`` and above to ``stream`` (default stderr), and only
    there (not on to the root logger)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("ipsecgw")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
