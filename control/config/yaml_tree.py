"""YAML with line numbers: the tree the section readers walk, each value with the line it starts on.

Duplicate keys are refused here (PyYAML keeps the last silently), and YAML 1.1 numbers keep the text the
operator wrote, for fields that must be read as written.
"""

from __future__ import annotations

from typing import Any

import yaml

from control.config.errors import ConfigError


class Node:
    """A parsed YAML value with the line it starts on (1-based)."""

    __slots__ = ("value", "line")

    def __init__(self, value: Any, line: int):
        self.value, self.line = value, line


class Num:
    """A YAML number with the text it was written as."""

    __slots__ = ("number", "text")

    def __init__(self, number: Any, text: str):
        self.number, self.text = number, text


def compose(text: str, file: str) -> Node | None:
    """The tree of ``text`` (None when it holds no document); ``file`` names it in messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from None
    if root is None:
        return None
    loader = yaml.SafeLoader("")
    dupes: list[str] = []

    def walk(node: yaml.Node) -> Node:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Node] = {}
            keys: dict[str, int] = {}
            for k, v in node.value:
                key = str(loader.construct_object(k, deep=True))
                if key in keys:
                    dupes.append(f"{file}:{k.start_mark.line + 1}: key {key!r} appears twice "
                                 f"(first on line {keys[key]})")
                keys[key] = k.start_mark.line + 1
                out[key] = walk(v)
            return Node(out, line)
        if isinstance(node, yaml.SequenceNode):
            return Node([walk(v) for v in node.value], line)
        if node.tag == "tag:yaml.org,2002:int" or node.tag == "tag:yaml.org,2002:float":
            # YAML 1.1 reads 0x.., 0o.., 1:30 and 1_000 as numbers; keep the operator's text for
            # fields (like secrets) that must be read as written.
            return Node(Num(loader.construct_object(node), node.value), line)
        return Node(loader.construct_object(node, deep=True), line)

    tree = walk(root)
    if dupes:
        raise ConfigError(dupes)
    return tree
