"""UDP 4500 shared by control and fastpath: SO_REUSEPORT plus the fastpath's reuseport cBPF program sends
IKE (non-ESP marker) to control's socket and ESP-in-UDP to the fastpath's, and the probe re-learns the
fastpath's group index after control's socket leaves and rejoins (the kernel renumbers the group)."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from fastpath.batch import Batch

kio = pytest.importorskip("fastpath.io.kio")
if kio.lib is None:
    pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}", allow_module_level=True)

from support.reuseport import HOST, control_socket, drain_control  # noqa: E402

from fastpath.io.sockets import NattSocket  # noqa: E402


def _send_mix(port: int, n: int = 16) -> tuple[list[bytes], list[bytes]]:
    """IKE and ESP datagrams from many source ports (so the kernel's hash alone would spread them)."""
    ike, esp = [], []
    for i in range(n):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind((HOST, 0))
        k = bytes(4) + os.urandom(8) + bytes([i])
        e = struct.pack("!II", 0x3000 + i, i + 1) + os.urandom(24)
        tx.sendto(k, (HOST, port))
        tx.sendto(e, (HOST, port))
        tx.close()
        ike.append(k)
        esp.append(e)
    return ike, esp


def _fastpath_recv(fp: NattSocket, kb) -> tuple[list[bytes], int, int]:
    n, ike, probe = kb.recv_udp4(fp.fileno(), fp.local_packed, fp.port)
    return [kb.batch.packet(i)[28:] for i in range(n)], ike, probe


def _settle(fp: NattSocket, kb) -> None:
    fp.probe()
    deadline = time.monotonic() + 2
    while fp.probing and time.monotonic() < deadline:
        _, _, probe = _fastpath_recv(fp, kb)
        fp.tick(probe, time.monotonic())
        time.sleep(0.01)
    assert not fp.probing


def test_ike_to_control_esp_to_fastpath_across_control_restart() -> None:
    probe_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe_sock.bind((HOST, 0))
    port = probe_sock.getsockname()[1]
    probe_sock.close()
    ctl = control_socket(port)
    fp = NattSocket(HOST, port)
    kb = kio.KBatch(Batch(64, mtu=200))
    try:
        _settle(fp, kb)
        assert fp.index == 1                     # control joined first
        ike, esp = _send_mix(port)
        got, ike_seen, _ = _fastpath_recv(fp, kb)
        assert got == esp and ike_seen == 0
        assert drain_control(ctl) == ike

        # control restarts: its socket leaves (the fastpath's becomes index 0) and a new one joins as 1
        ctl.close()
        ctl = control_socket(port)
        ike, esp = _send_mix(port)
        got, ike_seen, _ = _fastpath_recv(fp, kb)
        assert ike_seen == len(ike)              # steering is stale: IKE reached the fastpath, which sees it
        drain_control(ctl)
        _settle(fp, kb)
        assert fp.index == 0 and fp.reattached == 1
        ike, esp = _send_mix(port)
        got, ike_seen, _ = _fastpath_recv(fp, kb)
        assert got == esp and ike_seen == 0
        assert drain_control(ctl) == ike
    finally:
        fp.close()
        ctl.close()
