"""The soak's pass criteria (tests/soak/verdict.py) on made-up samples: what counts as inside an abuse
window, how an SA leak and an RSS leak are told from the transients of a rekey and from noise."""

from __future__ import annotations

import random

from soak.verdict import MIB, judge_pings, judge_processes, judge_sas, judge_udp, trend


def _sample(t: float, ike: int = 1, child: int = 1, region: int = 2, half: int = 0, rss: int = 50 * MIB,
            fds: int = 10, pid: int = 100, restarts: int = 0) -> dict:
    return {"t": t, "ike_sas": ike, "child_sas": child, "region_sas": region, "half_open": half,
            "processes": {"control": {"pid": pid, "restarts": restarts, "rss": rss, "fds": fds}}}


def test_a_loss_in_a_window_is_set_apart_and_one_outside_is_not() -> None:
    windows = [{"start": 100.0, "end": 102.0}]
    sent = [99.4, 99.6, 101.0, 104.9, 105.1]
    got = judge_pings(sent, [False, False, False, False, False], windows)
    # 99.6 is within the 0.5 s before, 104.9 within the 3 s after; 99.4 and 105.1 are outside
    assert (got["lost_in_windows"], got["lost_outside"], got["sent_outside"]) == (3, 2, 2)
    assert got["lost_outside_times"] == [99.4, 105.1]


def test_udp_seconds_touching_a_window_are_left_out() -> None:
    windows = [{"start": 10.0, "end": 12.0}]
    ivs = [{"start": float(s), "end": s + 1.0, "packets": 100, "lost": 5 if 9 <= s <= 14 else 0}
           for s in range(0, 20)]
    got = judge_udp(ivs, windows)
    assert got["lost"] == 30 and got["lost_outside"] == 0 and got["packets_outside"] == 100 * 13


def test_rekey_overlaps_pass_and_a_leaked_child_sa_does_not() -> None:
    rekeys = [_sample(t, child=2 if t % 10 == 5 else 1) for t in range(0, 300, 5)]
    assert judge_sas(rekeys, 5)["child_sas"]["longest_above_s"] == 5
    leak = [_sample(t, child=2 if t >= 150 else 1) for t in range(0, 300, 5)]
    got = judge_sas(leak, 5)["child_sas"]
    assert got["longest_above_s"] == 150 and got["last"] == 2


def test_rss_noise_is_flat_and_a_steady_leak_is_not() -> None:
    rng = random.Random(7)
    noise = [(float(t), 50 * MIB + rng.randrange(-MIB, MIB)) for t in range(0, 1800, 5)]
    flat = trend(noise)
    assert abs(flat["growth"]) < 2 * MIB and abs(flat["fitted_rise"]) < 2 * MIB
    leak = [(t, v + t * 4000) for t, v in noise]       # 4 kB a second: 7 MiB in 30 min
    grown = trend(leak)
    assert grown["growth"] > 4 * MIB and grown["fitted_rise"] > 6 * MIB


def test_warm_up_is_left_out_and_a_restart_shows() -> None:
    samples = [_sample(t, rss=(20 if t < 60 else 50) * MIB) for t in range(0, 600, 5)]
    got = judge_processes(samples, 0.0, 600.0)["control"]
    assert got["rss"]["growth"] == 0 and got["pids"] == [100] and got["restarts"] == 0
    samples[-1] = _sample(595, pid=101, restarts=1)
    got = judge_processes(samples, 0.0, 600.0)["control"]
    assert got["pids"] == [100, 101] and got["restarts"] == 1
