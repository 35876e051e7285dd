"""The control socket: a unix stream socket speaking one JSON object per line.

Request ``{"cmd": "list-sas", "args": {...}}``; reply ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": "..."}``.  The socket file is 0600 in a 0700
directory (keys can be exported through it), and each handler is told the
caller's uid (SO_PEERCRED) so root-only commands can refuse others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["ControlServer", "ControlError", "CommandError", "call", "Handler"]

log = logging.getLogger("ipsecgw.ctl")

Handler = Callable[[dict[str, Any], int], Any | Awaitable[Any]]
MAX_REQUEST = 64 * 1024


class ControlError(RuntimeError):
    """The daemon refused a request or cannot be reached; the message is for the operator."""


class CommandError(Exception):
    """Raised by a handler: the request is refused with this message."""


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except OSError:
        return -1


class ControlServer:
    """Serve ``handlers`` (command name -> function(args, uid)) on a unix socket path."""

    def __init__(self, path: str, handlers: dict[str, Handler]):
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        p = Path(self.path)
        if not p.parent.exists():
            p.parent.mkdir(mode=0o700, parents=True)
        if p.exists() or p.is_symlink():
            # a stale socket from a daemon that died; refuse if one still answers
            try:
                r, w = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 1)
                w.close()
                raise ControlError(f"{self.path}: another daemon is listening on this control socket")
            except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
                p.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=self.path, limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = _peer_uid(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
                    return
                if not line:
                    return
                await self._reply(writer, await self._dispatch(line, uid))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes, uid: int) -> dict[str, Any]:
        try:
            req = json.loads(line)
            cmd, args = req["cmd"], req.get("args") or {}
            if not isinstance(cmd, str) or not isinstance(args, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": 'expected one JSON object per line: {"cmd": NAME, "args": {...}}'}
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {', '.join(sorted(self.handlers))}"}
        try:
            result = handler(args, uid)
            if asyncio.iscoroutine(result):
                result = await result
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:       # noqa: BLE001 - a bug in one command must not end the daemon
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error in {cmd}: {exc.__class__.__name__}"}
        return {"ok": True, "result": result}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()


def call(path: str, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    """Client side: send one command and return its result, or raise ControlError."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except FileNotFoundError:
            raise ControlError(f"{path}: no control socket (is `ipsecgw run` running with this config?)") from None
        except ConnectionRefusedError:
            raise ControlError(f"{path}: nobody listens on the control socket (daemon not running?)") from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (the control socket is root only)") from None
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ControlError(f"{path}: the daemon closed the connection without answering")
            buf += chunk
    except TimeoutError:
        raise ControlError(f"{path}: no answer within {timeout:g} s") from None
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "request refused"))
    return reply.get("result")
