"""control/cli.py only dispatches: its table of verbs names exactly what each family registers, and a
command line naming a verb imports only that verb's family."""

from __future__ import annotations

import argparse
import subprocess
import sys

from control import cli


def _registered(register: cli.Registrar) -> set[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    return set(sub.choices)


def test_the_verb_table_matches_what_each_family_registers() -> None:
    for register in dict.fromkeys(cli.VERBS.values()):
        assert _registered(register) == {v for v, r in cli.VERBS.items() if r is register}


def test_the_full_help_lists_every_verb() -> None:
    assert set(cli.build_parser()._subparsers._group_actions[0].choices) == set(cli.VERBS)


def test_a_verb_imports_only_its_family() -> None:
    code = ("import sys; from control import cli; cli.build_parser('caps'); "
            "print(sorted(m for m in sys.modules if m.startswith(('control.verbs', 'fastpath.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['fastpath.cli', 'fastpath.cli.caps']"
