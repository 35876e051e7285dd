"""YAML with line numbers: the tree the section readers walk, each value with the line it starts on.

Duplicate keys are refused here (PyYAML keeps the last silently), and YAML 1.1 numbers keep the text the
operator wrote, for fields that must be read as written.
"""

from __future__ import annotations

from typing import Any

import yaml

from control.config.errors import ConfigError

# values (scalars, lists, mappings) one configuration may hold once its aliases are expanded: a
# thousand connections of a few hundred values each, far under what would exhaust memory
MAX_VALUES = 200_000
MAX_DEPTH = 64      # levels of nesting; a configuration has six or so


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


def _not_yaml(exc: yaml.YAMLError, file: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{file}:{mark.line + 1}" if mark is not None else file
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError([f"{where}: not valid YAML: {problem}"])


def compose(text: str, file: str) -> Node | None:
    """The tree of ``text`` (None when it holds no document); ``file`` names it in messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        # PyYAML's composer recurses once per level of nesting
        raise ConfigError([f"{file}: expected at most {MAX_DEPTH} levels of nesting, got far more"]) from None
    except yaml.YAMLError as exc:
        raise _not_yaml(exc, file) from None
    if root is None:
        return None
    loader = yaml.SafeLoader("")
    dupes: list[str] = []
    # YAML aliases make the node graph a DAG or even a cycle: a mapping that holds an alias of itself
    # (``a: &x {b: *x}``) would recurse forever, and aliases of aliases ("billion laughs") expand
    # exponentially.  Both are refused by name instead of ending in RecursionError or MemoryError.
    open_nodes: set[int] = set()
    walked = [0]

    def walk(node: yaml.Node) -> Node:
        line = node.start_mark.line + 1
        walked[0] += 1
        if len(open_nodes) >= MAX_DEPTH:
            raise ConfigError([f"{file}:{line}: expected at most {MAX_DEPTH} levels of nesting, got more"])
        if walked[0] > MAX_VALUES:
            raise ConfigError([f"{file}:{line}: expected at most {MAX_VALUES} values, got more "
                               "(YAML aliases expanding into each other?)"])
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in open_nodes:
                raise ConfigError([f"{file}:{line}: expected a value, got a YAML alias that contains itself"])
            open_nodes.add(id(node))
            try:
                return _collection(node, line)
            finally:
                open_nodes.discard(id(node))
        if node.tag == "tag:yaml.org,2002:int" or node.tag == "tag:yaml.org,2002:float":
            # YAML 1.1 reads 0x.., 0o.., 1:30 and 1_000 as numbers; keep the operator's text for
            # fields (like secrets) that must be read as written.
            return Node(Num(loader.construct_object(node), node.value), line)
        return Node(loader.construct_object(node, deep=True), line)

    def _collection(node: yaml.Node, line: int) -> Node:
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Node] = {}
            keys: dict[str, int] = {}
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    # a list or mapping as key (``? [a]``): no section has such keys, and constructing
                    # one may fail inside PyYAML (unhashable, or an alias of itself)
                    raise ConfigError([f"{file}:{k.start_mark.line + 1}: expected a plain key, "
                                       f"got a {'list' if isinstance(k, yaml.SequenceNode) else 'mapping'}"])
                key = str(loader.construct_object(k, deep=True))
                if key in keys:
                    dupes.append(f"{file}:{k.start_mark.line + 1}: key {key!r} appears twice "
                                 f"(first on line {keys[key]})")
                keys[key] = k.start_mark.line + 1
                out[key] = walk(v)
            return Node(out, line)
        return Node([walk(v) for v in node.value], line)

    try:
        tree = walk(root)
    except yaml.YAMLError as exc:
        # what composing leaves to construction: a tag no safe constructor knows (``!foo``), a bad timestamp
        raise _not_yaml(exc, file) from None
    if dupes:
        raise ConfigError(dupes)
    return tree
