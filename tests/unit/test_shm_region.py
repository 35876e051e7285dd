"""Region file: creation, layout, and refusing files that are not a region we can read."""

from __future__ import annotations

import ipaddress
import os
import stat
import struct
from pathlib import Path

import pytest
from support.shm_helpers import shm_sa

from cdefs import defines
from cdefs.sa import SA
from control.shm import ControlRegion
from fastpath.shm import Capacities, FastpathRegion, RegionError, ffi, lib, params_to_sa, sa_to_params

D = defines("shm.h")
SMALL = Capacities(n_sa=32, n_spd=16, cmd_ring=16, evt_ring=16)
KEY = bytes(range(36))   # what the delete must leave no trace of
GCM256 = {"enc": "aes-gcm-256", "enc_key": KEY}


def test_created_file_is_0600_and_laid_out_from_capacities(shm_path):
    with ControlRegion.create(shm_path, SMALL) as r:
        assert stat.S_IMODE(os.stat(shm_path).st_mode) == 0o600
        h = r.hdr
        assert h.magic == D["IPSG_SHM_MAGIC"] and h.abi == D["IPSG_SHM_ABI"]
        assert os.stat(shm_path).st_size == h.total_size
        assert h.n_hash >= 2 * SMALL.n_sa and h.n_hash & (h.n_hash - 1) == 0
        # Tables are cache-line aligned, in order, and do not overlap.
        spans = [
            (h.off_sa, SMALL.n_sa * ffi.sizeof("struct ipsg_shm_sa")),
            (h.off_ctr, SMALL.n_sa * ffi.sizeof("struct ipsg_shm_ctr")),
            (h.off_hash[0], h.n_hash * 8), (h.off_hash[1], h.n_hash * 8),
            (h.off_policy, SMALL.n_spd * ffi.sizeof("struct ipsg_spd_policy")),
            (h.off_bind, SMALL.n_spd * ffi.sizeof("struct ipsg_spd_bind")),
            (h.off_acq, SMALL.n_spd * 8),
            (h.off_spd[0], h.spd_size), (h.off_spd[1], h.spd_size),
            (h.off_cmd, ffi.sizeof("struct ipsg_shm_ring") + 16 * ffi.sizeof("struct ipsg_shm_cmd")),
            (h.off_evt, ffi.sizeof("struct ipsg_shm_ring") + 16 * ffi.sizeof("struct ipsg_shm_event")),
        ]
        end = ffi.sizeof("struct ipsg_shm_hdr")
        for off, size in spans:
            assert off % 64 == 0 and off >= end
            end = off + size
        assert end <= h.total_size


def test_create_refuses_an_existing_file(shm_path):
    shm_path.write_bytes(b"precious")
    shm_path.chmod(0o600)
    with pytest.raises(RegionError, match=f"{shm_path}: cannot create: File exists"):
        ControlRegion.create(shm_path, SMALL)
    assert shm_path.read_bytes() == b"precious"


@pytest.mark.parametrize("caps, why", [
    (Capacities(n_sa=0), "SA capacity 0"),
    (Capacities(n_spd=0), "policy capacity 0"),
    (Capacities(cmd_ring=100), "powers of two"),
])
def test_bad_capacities_are_named(shm_path, caps, why):
    with pytest.raises(RegionError, match=why):
        ControlRegion.create(shm_path, caps)
    assert not shm_path.exists()


def _corrupt(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_wrong_magic_is_refused(shm_path):
    ControlRegion.create(shm_path, SMALL).close()
    _corrupt(shm_path, 0, b"NOTAREGN")
    for cls in (FastpathRegion, ControlRegion):
        with pytest.raises(RegionError, match=rf"{shm_path}: refused: wrong magic 0x[0-9a-f]+ .*not an ipsecgw region"):
            cls.attach(shm_path)


def test_zero_magic_says_creator_died(shm_path):
    ControlRegion.create(shm_path, SMALL).close()
    _corrupt(shm_path, 0, bytes(8))
    with pytest.raises(RegionError, match="magic is zero"):
        FastpathRegion.attach(shm_path)


def test_wrong_abi_is_refused(shm_path):
    ControlRegion.create(shm_path, SMALL).close()
    _corrupt(shm_path, ffi.offsetof("struct ipsg_shm_hdr", "abi"), struct.pack("<I", D["IPSG_SHM_ABI"] + 1))
    with pytest.raises(RegionError, match=rf"{shm_path}: refused: ABI version {D['IPSG_SHM_ABI'] + 1}, this build "
                                          rf"speaks version {D['IPSG_SHM_ABI']}"):
        FastpathRegion.attach(shm_path)


def test_other_record_sizes_are_refused(shm_path):
    ControlRegion.create(shm_path, SMALL).close()
    _corrupt(shm_path, ffi.offsetof("struct ipsg_shm_hdr", "sa_size"), struct.pack("<I", 1000))
    with pytest.raises(RegionError, match="record sizes differ"):
        FastpathRegion.attach(shm_path)


def test_inconsistent_offsets_are_refused(shm_path):
    ControlRegion.create(shm_path, SMALL).close()
    _corrupt(shm_path, ffi.offsetof("struct ipsg_shm_hdr", "off_evt"), struct.pack("<Q", 64))
    with pytest.raises(RegionError, match="corrupt header: table offsets"):
        FastpathRegion.attach(shm_path)


def test_truncated_file_is_refused(shm_path):
    ControlRegion.create(shm_path, SMALL).close()
    full = os.stat(shm_path).st_size
    os.truncate(shm_path, full - 4096)
    with pytest.raises(RegionError, match=rf"{shm_path}: refused: truncated: file is {full - 4096} bytes, "
                                          rf"the header needs {full}"):
        FastpathRegion.attach(shm_path)
    os.truncate(shm_path, 100)
    with pytest.raises(RegionError, match="truncated: 100 bytes, smaller than the"):
        FastpathRegion.attach(shm_path)
    os.truncate(shm_path, 0)
    with pytest.raises(RegionError, match="truncated: 0 bytes"):
        FastpathRegion.attach(shm_path)


def test_group_readable_file_is_refused(shm_path):
    ControlRegion.create(shm_path, SMALL).close()
    shm_path.chmod(0o644)
    with pytest.raises(RegionError, match="mode 644 lets other users read SA keys"):
        FastpathRegion.attach(shm_path)


def test_missing_file(shm_path):
    with pytest.raises(RegionError, match=f"{shm_path}: cannot open: No such file"):
        FastpathRegion.attach(shm_path)


def test_params_round_trip_every_field():
    from cdefs.sa import Lifetime, Mode, TrafficSelector

    sa = SA(spi=0xdeadbeef, src=ipaddress.ip_address("2001:db8::1"), dst=ipaddress.ip_address("2001:db8::2"),
            enc="aes-cbc-128", enc_key=bytes(range(16)), integ="hmac-sha384-192", integ_key=bytes(range(48)),
            mode=Mode.TRANSPORT, esn=True, seq=1 << 40, replay_window=1024, udp_encap=True, sport=4501, dport=4502,
            ttl=17, df="set", dscp=46, ecn="compat", flowlabel="zero",
            local_ts=[TrafficSelector.from_network("2001:db8:1::/48", 6, 80, 443)],
            remote_ts=[TrafficSelector.from_network("2001:db8:2::/48"), TrafficSelector.any(6)],
            lifetime=Lifetime(1, 2, 3, 4))
    back, direction = params_to_sa(sa_to_params(sa, "in"))
    assert direction == "in"
    assert back == sa


def test_slot_write_read_and_delete_zeroes_keys(shm_path):
    with ControlRegion.create(shm_path, SMALL) as c:
        h = c.install_sa(shm_sa(0x1000, **GCM256), "out", placement=3)
        cur = c.read_slot(h.slot)
        assert cur.state == D["IPSG_SHM_SA_ACTIVE"] and cur.placement == 3 and cur.id == h.sa_id
        assert lib.ipsg_shm_digest(ffi.addressof(cur, "p")) == cur.digest
        assert c.sa(h.slot)[0] == shm_sa(0x1000, **GCM256)
        h2 = c.update_sa(h.slot, shm_sa(0x1000, **GCM256, seq=5), "out")
        assert (h2.slot, h2.sa_id) == (h.slot, h.sa_id) and h2.version == h.version + 1
        c.delete_sa(h.slot)
        raw = bytes(ffi.buffer(lib.ipsg_shm_base(c.handle) + c.hdr.off_sa + h.slot * ffi.sizeof("struct ipsg_shm_sa"),
                               ffi.sizeof("struct ipsg_shm_sa")))
        assert KEY not in raw and raw.count(0) > len(raw) - 16
        assert c.sa(h.slot) is None and c.lookup_spi(0x1000) is None
        with pytest.raises(KeyError):
            c.delete_sa(h.slot)


def test_full_table_is_an_error_not_an_overwrite(shm_path):
    with ControlRegion.create(shm_path, Capacities(n_sa=2, n_spd=2, cmd_ring=16, evt_ring=16)) as c:
        c.install_sa(shm_sa(0x100, **GCM256), "out")
        c.install_sa(shm_sa(0x101, **GCM256), "out")
        with pytest.raises(RegionError, match="all 2 SA slots are in use"):
            c.install_sa(shm_sa(0x102, **GCM256), "out")
