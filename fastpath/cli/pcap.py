"""``ipsecgw pcap encrypt|decrypt`` (``protect|unprotect``): run captured packets through an engine offline.

ESP and AH (docs/ah.md) SAs alike; for AH ``best`` picks the fastest present
engine that has AH with the SAs' algorithms (the C engines and the reference do).

Input: a classic pcap (Ethernet, raw IP, Linux cooked...).  Output: a raw-IP
(LINKTYPE_RAW) pcap with the same timestamps.  Packets go to the engine in
batches, one engine call per batch, exactly as the gateway's data plane would
see them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from cdefs.sa import SA, Direction, SAError
from fastpath.batch import Batch
from fastpath.engines import Engine, EngineError, create, discover, known_names
from fastpath.pcapfile import (
    DEFAULT_SNAPLEN,
    LINKTYPE_RAW,
    PcapError,
    PcapReader,
    PcapRecordError,
    PcapWriter,
    ip_payload,
    is_supported_linktype,
    linktype_name,
)
from fastpath.sa_file import SAFileError, load_sa_file
from fastpath.status import N_STATUS, Status

ENGINE_CHOICES = ("best", *known_names())
DEFAULT_BATCH = 256
BATCH_MEMORY = 64 << 20     # cap on one batch buffer, for captures of huge (TSO/GRO) packets
MIN_MTU = 1600

# Statuses that are not a failure of an ESP packet on decrypt.
_DECRYPT_FINE = (Status.OK, Status.NOT_ESP, Status.DUMMY)


def _spi(text: str) -> int:
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an SPI as 0x-prefixed hex or decimal, got {text!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"expected an SPI from 0 to 0xffffffff, got {text!r}")
    return value


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65536:
        raise argparse.ArgumentTypeError(f"expected a batch size from 1 to 65536, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pcap", help="encrypt or decrypt the packets of a pcap file offline",
                       description="Run the packets of a pcap file through an ESP or AH engine. The output is a "
                                   "raw-IP (LINKTYPE_RAW) pcap with the input's timestamps.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    d = verbs.add_parser("decrypt", aliases=["unprotect"],
                         help="decrypt ESP / verify AH packets; other IP packets pass through unchanged",
                         description="Decrypt the ESP packets (IP protocol 50, or UDP port 4500) and verify the AH "
                                     "packets (IP protocol 51) of IN with the SAs of the SA file, writing what "
                                     "remains once ESP or AH is removed. Packets that are neither are written "
                                     "unchanged. Prints counts per status; exits 1 if any ESP or AH packet failed.")
    e = verbs.add_parser("encrypt", aliases=["protect"], help="protect every IP packet with one SA (ESP or AH)",
                         description="Protect every IP packet of IN with one outbound SA (--spi, or the first "
                                     "SA of the file) and write the ESP or AH packets with their outer headers.")
    for verb, parser in (("decrypt", d), ("encrypt", e)):
        parser.add_argument("--sa", required=True, metavar="SAS.yaml", help="static SA file (YAML)")
        if verb == "encrypt":
            parser.add_argument("--spi", type=_spi, help="SA to use (0x hex or decimal; default: the first SA)")
        parser.add_argument("--engine", default="best", choices=ENGINE_CHOICES,
                            help="engine (default: best = the fastest present one that serves the SAs)")
        parser.add_argument("--batch", type=_batch_size, default=DEFAULT_BATCH, metavar="N",
                            help=f"packets per engine call (default {DEFAULT_BATCH})")
        parser.add_argument("--json", action="store_true",
                            help="print the counts as one JSON object (read, written, statuses, partial, non_ip)")
        parser.add_argument("input", metavar="IN.pcap")
        parser.add_argument("output", metavar="OUT.pcap")
        parser.set_defaults(func=run_decrypt if verb == "decrypt" else run_encrypt)


def _err(msg: str) -> None:
    print(f"ipsecgw pcap: {msg}", file=sys.stderr)


def _sa_name(source: str, index: int, sa: SA) -> str:
    return f"{source}: sas[{index}] (spi 0x{sa.spi:x})"


@dataclass
class _Counts:
    direction: Direction
    read: int = 0
    non_ip: int = 0
    partial: int = 0
    written: int = 0
    status: np.ndarray = field(default_factory=lambda: np.zeros(N_STATUS, dtype=np.int64))

    def summary(self) -> str:
        parts = [f"{Status(s).label} {int(n)}" for s, n in enumerate(self.status) if n]
        if self.partial:
            what = "written unchanged" if self.direction is Direction.IN else "skipped"
            parts.append(f"partial {self.partial} (cut short by the capture, {what})")
        if self.non_ip:
            parts.append(f"non-ip {self.non_ip} (skipped)")
        return f"{self.read} packets: " + (", ".join(parts) if parts else "none")

    def as_dict(self) -> dict[str, object]:
        """The same counts as summary(), statuses by their labels (only those that occurred)."""
        return {"read": self.read, "written": self.written, "partial": self.partial, "non_ip": self.non_ip,
                "status": {Status(s).label: int(n) for s, n in enumerate(self.status) if n}}


class _Batcher:
    """Reuses one Batch, growing it when a chunk holds a bigger packet (jumbo frames)."""

    def __init__(self, size: int):
        self.size = size
        self.batch: Batch | None = None

    def for_packets(self, largest: int) -> Batch:
        if self.batch is None or self.batch.max_packet < largest:
            mtu = max(MIN_MTU, largest)
            probe = Batch(capacity=1, mtu=mtu)
            capacity = max(1, min(self.size, BATCH_MEMORY // probe.slot_size))
            self.batch = Batch(capacity=capacity, mtu=mtu)
        self.batch.clear()
        return self.batch


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _process(engine: Engine, direction: Direction, reader: PcapReader, writer: PcapWriter,
             batch_size: int, counts: _Counts) -> PcapRecordError | None:
    """Stream the capture through the engine; returns the record error that stopped it, if any."""
    batcher = _Batcher(batch_size)
    call = engine.inbound if direction is Direction.IN else engine.outbound
    pending: list[tuple[int, int, bytes, bool]] = []

    def flush() -> None:
        largest = max(len(p[2]) for p in pending)
        batch = batcher.for_packets(largest)
        for chunk in _chunks(pending, batch.capacity):
            batch.clear()
            for _, _, pkt, _ in chunk:
                batch.append(pkt, 0)
            call(batch)
            st = batch.status[:batch.n].copy()
            # A packet the capture cut short (snaplen) cannot be processed; that
            # is a property of the capture, not an ESP failure.
            partial = np.fromiter((c[3] for c in chunk), dtype=bool, count=len(chunk)) & (st == Status.MALFORMED)
            counts.partial += int(partial.sum())
            counts.status += np.bincount(st[~partial], minlength=N_STATUS)[:N_STATUS]
            for i, (ts_sec, ts_frac, pkt, _) in enumerate(chunk):
                s = st[i]
                if s == Status.OK:
                    writer.write(ts_sec, ts_frac, batch.packet(i))
                elif direction is Direction.IN and (s == Status.NOT_ESP or partial[i]):
                    # The contract leaves such packets untouched; write our own copy to be sure.
                    writer.write(ts_sec, ts_frac, pkt)
        pending.clear()

    error = None
    try:
        for rec in reader:
            counts.read += 1
            pkt = ip_payload(reader.linktype, rec.data)
            if pkt is None:
                counts.non_ip += 1
                continue
            pending.append((rec.ts_sec, rec.ts_frac, pkt, rec.orig_len > len(rec.data)))
            if len(pending) >= batch_size:
                flush()
    except PcapRecordError as exc:
        error = exc
    if pending:
        flush()
    counts.written = writer.count
    return error


def _open_input(path: str) -> tuple[BinaryIO, PcapReader] | None:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        _err(f"{path}: cannot open: {exc.strerror or exc}")
        return None
    try:
        reader = PcapReader(f)
    except PcapError as exc:
        f.close()
        _err(f"{path}: {exc}")
        return None
    if not is_supported_linktype(reader.linktype):
        f.close()
        _err(f"{path}: unsupported {linktype_name(reader.linktype)}; expected Ethernet (1), raw IP (101), "
             "IPv4 (228), IPv6 (229), Linux cooked (113, 276) or BSD loopback (0)")
        return None
    return f, reader


def _run(args: argparse.Namespace, direction: Direction) -> int:
    verb = "decrypt" if direction is Direction.IN else "encrypt"
    try:
        sas = load_sa_file(args.sa, warn=lambda text: print(f"warning: {text}", file=sys.stderr))
    except SAFileError as exc:
        print(exc, file=sys.stderr)
        return 2

    chosen = list(enumerate(sas))
    if direction is Direction.OUT:
        if args.spi is not None:
            chosen = [(i, sa) for i, sa in chosen if sa.spi == args.spi][:1]
            if not chosen:
                have = ", ".join(f"0x{sa.spi:x}" for sa in sas)
                _err(f"{args.sa}: no SA with spi 0x{args.spi:x} (the file has {have})")
                return 2
        chosen = chosen[:1]

    name = args.engine
    ah_algs = {sa.integ for _, sa in chosen if sa.is_ah}
    if name == "best" and ah_algs:
        # The fastest present engine that has AH with these algorithms (docs/ah.md).
        name = next((i.name for i in discover() if i.present and ah_algs <= set(i.ah_algorithms)), "reference")
    try:
        engine = create(name, capacity=max(1024, len(chosen)))
    except EngineError as exc:
        _err(str(exc))
        return 2
    try:
        for slot, (i, sa) in enumerate(chosen):
            try:
                engine.add_sa(slot, sa, direction)
            except (EngineError, SAError) as exc:
                _err(f"{_sa_name(args.sa, i, sa)}: engine {getattr(engine, 'name', args.engine)} "
                     f"cannot take this SA: {exc}")
                return 2

        opened = _open_input(args.input)
        if opened is None:
            return 2
        fin, reader = opened
        with fin:
            if os.path.exists(args.output) and os.path.samefile(args.input, args.output):
                _err(f"{args.output}: is the input file; choose another output")
                return 2
            try:
                fout = open(args.output, "wb")  # noqa: SIM115
            except OSError as exc:
                _err(f"{args.output}: cannot create: {exc.strerror or exc}")
                return 2
            with fout:
                writer = PcapWriter(fout, LINKTYPE_RAW, nanosecond=reader.nanosecond,
                                    snaplen=max(reader.snaplen, DEFAULT_SNAPLEN))
                counts = _Counts(direction)
                error = _process(engine, direction, reader, writer, args.batch, counts)
    finally:
        engine.close()

    what = verb
    if direction is Direction.OUT:
        what += f" (spi 0x{chosen[0][1].spi:x})"
    fine = _DECRYPT_FINE if direction is Direction.IN else (Status.OK,)
    failed = int(counts.status.sum()) - sum(int(counts.status[s]) for s in fine)
    if args.json:
        doc = {"verb": verb, "spi": f"0x{chosen[0][1].spi:x}" if direction is Direction.OUT else None,
               "output": args.output, "failed": failed, **counts.as_dict(),
               "error": f"{args.input}: {error}" if error is not None else None}
        print(json.dumps(doc))
    else:
        print(f"{what}: {counts.summary()}; {counts.written} written to {args.output}")
    if error is not None:
        _err(f"{args.input}: {error}; the {error.number - 1} packets before it were processed and written")
        return 1
    return 1 if failed else 0


def run_decrypt(args: argparse.Namespace) -> int:
    return _run(args, Direction.IN)


def run_encrypt(args: argparse.Namespace) -> int:
    return _run(args, Direction.OUT)
