"""control/swanctl/parse.py: strongSwan's settings syntax as swanctl.conf uses it, and its errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.swanctl.convert import convert
from control.swanctl.parse import SwanctlSyntaxError, load_swanctl, parse_swanctl


def test_sections_settings_comments_and_quotes() -> None:
    root = parse_swanctl('''
# a comment
connections {
    a {   # trailing comment
        remote_addrs = 192.0.2.2, 192.0.2.3   # comment after a value
        proposals=aes128gcm16-prfsha256-x25519
        empty =
        children { net { local_ts = 10.1.0.0/16 } }
    }
}
secrets {
    ike-x {
        secret = "with # hash, \\"quotes\\" and \\\\ backslash"
        multi = "two
lines"
    }
}
''')
    a = root.sections["connections"].sections["a"]
    assert a.get("remote_addrs") == "192.0.2.2, 192.0.2.3"
    assert a.get("proposals") == "aes128gcm16-prfsha256-x25519"
    assert a.get("empty") == ""
    assert a.settings["remote_addrs"].line == 5
    ike = root.sections["secrets"].sections["ike-x"]
    assert ike.get("secret") == 'with # hash, "quotes" and \\ backslash'
    assert ike.get("multi") == "two\nlines"


def test_one_line_section_and_brace_on_next_line() -> None:
    root = parse_swanctl("a { b { c = 1 } }\nd\n{\n  e = 2\n}\n")
    assert root.sections["a"].sections["b"].get("c") == "1"
    assert root.sections["d"].get("e") == "2"


def test_a_section_given_twice_is_merged_later_values_win() -> None:
    root = parse_swanctl("c { x { a = 1\n b = 2 } }\nc { x { b = 3 } y { } }\n")
    x = root.sections["c"].sections["x"]
    assert (x.get("a"), x.get("b")) == ("1", "3")
    assert set(root.sections["c"].sections) == {"x", "y"}


def test_inheritance_from_a_sibling_and_by_dotted_path() -> None:
    root = parse_swanctl("""
connections {
    base { version = 2
           children { net { mode = tunnel } } }
    a : base { remote_addrs = 192.0.2.2 }
    b : connections.base { version = 0 }
}
""")
    c = root.sections["connections"].sections
    assert c["a"].get("version") == "2" and c["a"].get("remote_addrs") == "192.0.2.2"
    assert c["a"].sections["children"].sections["net"].get("mode") == "tunnel"
    assert c["b"].get("version") == "0"        # its own value wins over the base's
    assert c["base"].get("remote_addrs") is None


def test_include_globs_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("connections { b { version = 2 } }\n")
    (tmp_path / "conf.d" / "a.conf").write_text("connections { a { version = 2 } }\n")
    (tmp_path / "conf.d" / "skip.txt").write_text("not { read\n")
    (tmp_path / "inner.conf").write_text("secret = xyz\n")
    (tmp_path / "swanctl.conf").write_text("include conf.d/*.conf\nsecrets { ike-1 {\n include inner.conf\n} }\n"
                                           "include none/*.conf\n")
    root = load_swanctl(tmp_path / "swanctl.conf")
    assert list(root.sections["connections"].sections) == ["a", "b"]      # sorted, as charon reads them
    s = root.sections["secrets"].sections["ike-1"].settings["secret"]
    assert s.value == "xyz" and s.file == str(tmp_path / "inner.conf") and s.line == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("a {\n  b = 1\n", "<t>:3: a closing } for section 'a' opened at line 1"),
    ("a = 1\n}\n", "<t>:2: a setting or a section, got a } that closes nothing"),
    ("a {\n  b c\n}\n", "<t>:2: '=' (a setting) or '{' (a section) after 'b'"),
    ('a = "open\n\n', '<t>:1: a closing " for the quoted value begun here'),
    ('a = "x" y\n', "<t>:1: the end of the line after a quoted value"),
    ("= 1\n", "<t>:1: a setting name or a section name, got '='"),
    ("a : {\n}\n", "<t>:1: the name of the section 'a' inherits from, after ':'"),
    ("a : nowhere { }\n", "<t>:1: a section named 'nowhere' for 'a' to inherit from"),
    ("a : b { }\nb : a { }\n", "<t>:1: sections that do not inherit from each other in a circle"),
    ("a {" * 100 + "}" * 100, "<t>:1: sections nested at most 64 deep"),
])
def test_syntax_errors_say_file_line_and_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(SwanctlSyntaxError) as exc:
        parse_swanctl(text, "<t>")
    assert str(exc.value).startswith(expected), str(exc.value)


def test_unreadable_files_and_include_cycles(tmp_path: Path) -> None:
    with pytest.raises(SwanctlSyntaxError, match=r"missing.conf: cannot read: No such file"):
        load_swanctl(tmp_path / "missing.conf")
    (tmp_path / "bin.conf").write_bytes(b"a = 1\n\xff\xfe\n")
    with pytest.raises(SwanctlSyntaxError, match=r"bin.conf:2: UTF-8 text"):
        load_swanctl(tmp_path / "bin.conf")
    (tmp_path / "loop.conf").write_text("include loop.conf\n")
    with pytest.raises(SwanctlSyntaxError, match="include cycle"):
        load_swanctl(tmp_path / "loop.conf")
    (tmp_path / "named.conf").write_text("\ninclude absent.conf\n")
    with pytest.raises(SwanctlSyntaxError, match=r"named.conf:2: an include file that exists, got 'absent.conf'"):
        load_swanctl(tmp_path / "named.conf")


def test_the_installed_reference_swanctl_conf_parses() -> None:
    """Debian's /etc/swanctl/swanctl.conf (every setting commented out, then an include of conf.d/*.conf)."""
    path = Path("/etc/swanctl/swanctl.conf")
    if not path.exists():
        pytest.skip("strongswan-swanctl's /etc/swanctl/swanctl.conf is not installed")
    root = load_swanctl(path)
    assert root.settings == {} or all(s.file != str(path) for s in root.settings.values())


SEED = """connections {
    peer : base {
        remote_addrs = 192.0.2.2, %any
        local { auth = psk
                id = "@gw.example" }
        children { net { local_ts = 10.1.0.0/16[tcp/443]
                         esp_proposals = aes128gcm16 } }
    }
    base { version = 2 }
}
secrets { ike-x { id-a = gw.example
                  secret = 0x00ff } }
pools { p { addrs = 10.9.0.0/24 } }
"""


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.sampled_from(list('{}=#":,\n []/.-%@\\a0') + [""])),
                min_size=1, max_size=8))
def test_damaged_files_give_a_syntax_error_or_a_conversion_never_a_crash(edits: list[tuple[int, str]]) -> None:
    """Characters of a valid file replaced, inserted or deleted: the reader answers SwanctlSyntaxError or a
    tree, and the converter takes any tree the reader gives (control/swanctl/convert.py)."""
    text = list(SEED)
    for pos, ch in edits:
        text[min(pos, len(text) - 1)] = ch
    try:
        root = parse_swanctl("".join(text), "/nonexistent/swanctl.conf")
    except SwanctlSyntaxError as exc:
        assert str(exc).startswith("/nonexistent/swanctl.conf")
        return
    conv = convert(root, "/nonexistent")
    assert all(n.path and n.reason for n in conv.notes)
    assert "00ff" not in " ".join(map(str, conv.notes))


def test_the_installed_strongswan_conf_tree_reads_as_charon_would() -> None:
    """strongswan.conf uses the same settings syntax: Debian's /etc/strongswan.conf includes
    strongswan.d/charon/*.conf inside charon.plugins.  Each plugin file's uncommented ``load = ...``
    (found here by a plain regular expression) lands in charon.plugins.<file name>.load; and every
    settings file strongSwan installs (the templates in /usr/share/strongswan/templates too) reads."""
    top = Path("/etc/strongswan.conf")
    plugin_files = sorted(Path("/etc/strongswan.d/charon").glob("*.conf"))
    if not top.exists() or not plugin_files:
        pytest.skip("strongSwan's /etc/strongswan.conf and strongswan.d/charon/ are not installed")
    plugins = load_swanctl(top).sections["charon"].sections["plugins"].sections
    found = 0
    for f in plugin_files:
        m = re.search(r"^\s*load\s*=\s*(\S+)\s*$", f.read_text(), re.M)
        if m:
            found += 1
            assert plugins[f.stem].get("load") == m.group(1), f
            assert plugins[f.stem].settings["load"].file == str(f)
    assert found >= 10
    others = sorted(Path("/usr/share/strongswan/templates").rglob("*.conf")) + sorted(Path("/etc/strongswan.d").rglob(
        "*.conf"))
    for f in others:
        load_swanctl(f)
