"""`ipsecgw bench esp`: one cell from the command line, with the JSON fields users script against."""

from __future__ import annotations

import json

import pytest

from control.cli import main
from fastpath.engines import present_names


@pytest.mark.parametrize("engine", ["naive", "best", *present_names()])
def test_bench_esp_json(engine: str, capsys) -> None:
    rc = main(["bench", "esp", "--engine", engine, "--alg", "aes-cbc-128-hmac-sha256-128", "--size", "imix",
               "--direction", "in", "--batch", "32", "--seconds", "0.1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"engine", "alg", "size", "direction", "mpps", "gbps"} <= out.keys()
    assert out["engine"] in ({engine} if engine != "best" else set(present_names()))
    assert (out["alg"], out["size"], out["direction"]) == ("aes-cbc-128-hmac-sha256-128", "imix", "in")
    assert out["mpps"] > 0 and out["gbps"] > 0


@pytest.mark.parametrize("engine", ["naive", *present_names()])
def test_bench_esp_both_directions_paired(engine: str, capsys) -> None:
    rc = main(["bench", "esp", "--engine", engine, "--alg", "aes-gcm-128", "--size", "512", "--direction", "both",
               "--batch", "32", "--pairs", "20", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["engine"], out["alg"], out["size"], out["pairs"]) == (engine, "aes-gcm-128", "512", 20)
    assert out["out_mpps"] > 0 and out["in_mpps"] > 0
    assert out["q1"] <= out["median"] <= out["q3"]
    assert out["median"] > -1.0
    assert main(["bench", "esp", "--engine", engine, "--size", "64", "--direction", "both", "--batch", "32",
                 "--pairs", "10"]) == 0
    line = capsys.readouterr().out
    assert f"{engine} aes-gcm-128 64 B: inbound" in line and "against outbound (median of 10 pairs" in line


@pytest.mark.parametrize("argv, message", [
    (["--alg", "aes-gcm-999"], "unknown algorithm"),
    (["--size", "10"], "--size"),
    (["--engine", "nosuch"], "unknown engine"),
    (["--direction", "both", "--pairs", "3"], "--pairs"),
    (["--alg", "ah-hmac-md5"], "unknown algorithm"),
    (["--alg", "ah-hmac-sha1-96", "--engine", "naive"], "the naive baseline is ESP only"),
])
def test_bench_esp_bad_arguments(argv: list[str], message: str, capsys) -> None:
    assert main(["bench", "esp", "--seconds", "0.05", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("engine", present_names())
@pytest.mark.parametrize("alg", ["ah-hmac-sha1-96", "ah-aes-gmac-256"])
def test_bench_esp_times_ah(engine: str, alg: str, capsys) -> None:
    # an ah- algorithm times an AH SA: both directions run and every packet is checked (a drop would fail)
    for direction in ("out", "in"):
        assert main(["bench", "esp", "--engine", engine, "--alg", alg, "--size", "64", "--direction", direction,
                     "--batch", "32", "--seconds", "0.05", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["alg"], out["direction"]) == (alg, direction) and out["mpps"] > 0
