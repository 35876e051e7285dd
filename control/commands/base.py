"""What every command family shares: a part with handlers and nothing to do at start or stop, and the
look-up of the connection or child an operator names."""

from __future__ import annotations

from typing import Any

from control.config import ChildSpec, Config, ConnectionConfig
from control.ctl import CommandError, Handler

__all__ = ["CommandFamily", "resolve"]


class CommandFamily:
    """A daemon part that only answers commands."""

    def handlers(self) -> dict[str, Handler]:
        raise NotImplementedError

    def started(self) -> None:
        pass

    def stopping(self) -> None:
        pass


def resolve(config: Config, name: Any) -> tuple[ConnectionConfig, ChildSpec | None]:
    if not isinstance(name, str) or not name:
        raise CommandError("expected a connection or child name")
    if name in config.connections:
        return config.connections[name], None
    found = config.child(name)
    if found is None:
        raise CommandError(f"no connection or child named {name!r} (connections: "
                           f"{', '.join(config.connections)})")
    return found
