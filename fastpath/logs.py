"""Logging set-up shared by every ipsecgw process (control, fastpath, supervisor).

It lives in the lowest layer that logs, so the fastpath needs nothing from control to start its own.

Two formats: ``text`` (one readable line a record) and ``json`` (one JSON object a line, for log
shippers).  A record about an SA carries its identity as ``extra=`` fields (``SA_FIELDS``): the text
line already names the SA in its message, so only the JSON object shows them, as keys of their own.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["LOG_FORMATS", "SA_FIELDS", "JsonFormatter", "make_formatter", "set_format", "setup_logging"]

LOG_FORMATS = ("text", "json")
# the fields a record may carry about the SA it concerns (see control/log_fields.py)
SA_FIELDS = ("conn", "ike_sa", "ike_spi", "child", "peer", "spi", "spi_out", "dir", "slot")
_TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """ts (RFC 3339, UTC, microseconds), level, logger, event (the message), pid, then the SA fields the
    record carries and the exception text if any."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        obj: dict[str, Any] = {"ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "level": record.levelname.lower(),
                               "logger": record.name, "event": record.getMessage(), "pid": record.process}
        for key in SA_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                obj[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exc"] = record.exc_text
        # default=str: an odd object in a field must not cost the record
        return json.dumps(obj, ensure_ascii=False, default=str)


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    return JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT)


def setup_logging(level: str, stream: Any = None, fmt: str = "text") -> None:
    """Send the ``ipsecgw`` loggers' records at ``level`` and above to ``stream`` (default stderr), in
    ``fmt`` (``text`` or ``json``), and only there (not on to the root logger)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger("ipsecgw")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_format(fmt: str) -> None:
    """Switch the ``ipsecgw`` handlers to ``fmt`` (a reload)."""
    for handler in logging.getLogger("ipsecgw").handlers:
        handler.setFormatter(make_formatter(fmt))
