"""Run one fuzz target under atheris: ``python tests/fuzz/harness.py TARGET [libFuzzer flags] [CORPUS...]``.

A target is a module of this folder with

- ``seeds() -> list[bytes]``: real inputs (messages and packets our checked code paths build);
- ``mutate(data, max_size, seed) -> bytes``: the structure-aware custom mutator (it may fall back on
  ``atheris.Mutate``, libFuzzer's own byte mutations);
- ``one_input(data) -> None``: feeds one input to the product code and raises ``FuzzFailure`` when the
  oracle says no; any other exception escaping it is a crash as well.

The product packages are imported inside ``atheris.instrument_imports`` so their Python is coverage-guided;
the C they call (fastpath._esp_*, fastpath._kio) is not (it is not built with -fsanitize=fuzzer).
run.py calls this in a subprocess per target, so a crash in one target does not hide the others.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

TARGETS = ("esp_inbound", "ah_inbound", "ike_codec", "ike_responder", "config_loader")
PRODUCT = ["cdefs", "fastpath", "control"]


class FuzzFailure(AssertionError):
    """The oracle of a target refused what the product did with an input."""


def load(name: str, instrument: bool = False):
    """The target module; with ``instrument``, the product modules it pulls in are instrumented."""
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; expected one of {', '.join(TARGETS)}")
    if not instrument:
        return importlib.import_module(f"fuzz.{name}")
    import atheris
    # the target module too: its branches (the recipe's choices, the verdict it observed) are the only
    # coverage the C parsers give back
    with atheris.instrument_imports(include=[*PRODUCT, f"fuzz.{name}"]):
        return importlib.import_module(f"fuzz.{name}")


def write_seeds(module, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, s in enumerate(module.seeds()):
        (corpus / f"seed-{i:03d}").write_bytes(s)
        n += 1
    return n


def main(argv: list[str]) -> None:
    import atheris
    if len(argv) < 2:
        raise SystemExit(__doc__)
    name, rest = argv[1], argv[2:]
    module = load(name, instrument=True)
    # the first corpus directory given (libFuzzer's positional arguments) gets the seeds
    corpora = [a for a in rest if not a.startswith("-")]
    if corpora:
        write_seeds(module, Path(corpora[0]))
    atheris.Setup([argv[0], *rest], module.one_input, custom_mutator=module.mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
