"""The policy file's text to a YAML document, within limits that no file can get past. Pure.

A ConfigMap is one `kubectl edit` away from anyone who may edit it, and a YAML document can
cost far more than its size: libyaml's composer recurses once per nesting level in C, so 30,000
nested lists (60 kB) overflow the C stack and kill the process; an alias refers to a node
already built, so nine aliases of nine aliases of ... make a 400-byte file a graph with
billions of paths through it, which any walk over it (a repr in an error message) expands;
an integer of more than 4,300 digits makes Python's `int()` raise ValueError.

So the document is composed here, from libyaml's event stream (C, iterative), by a composer
that counts as it builds: nesting depth, and nodes with every alias counted at the size of
what it refers to, each refused the moment it passes its limit; a number is refused by its
length before it is converted. What passes is a node graph of bounded size, and only then
constructed into Python values by PyYAML's safe constructor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

MAX_DEPTH = 32
"""Nesting levels (a mapping in a list in a mapping is 3; the policy file needs 2)."""
MAX_NODES = 200_000
"""Nodes, aliases counted at their expanded size (a 1 MiB file of CIDRs has under 100,000)."""
MAX_KEYS = 1_000
"""Keys of one mapping (the policy file knows 8)."""
MAX_NUMBER_LENGTH = 64
"""Characters of a number (cidrLimit needs a handful)."""

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

try:  # libyaml's parser: events in C, without recursion, far faster on a long list of CIDRs
    from yaml._yaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml: the pure-Python parser, as iterative
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class Refused(yaml.YAMLError):
    """The document passes a limit (too deep, too many nodes or keys, too long a number), or
    holds a value Python cannot be made to hold (a date such as 2001-13-45)."""


@dataclass(frozen=True)
class Document:
    node: yaml.Node | None
    """The composed top node (None for an empty document)."""
    value: Any
    """The node constructed into Python values."""


class _Composer(Composer):
    """PyYAML's composer, counting depth and (expanded) nodes as it builds."""

    if TYPE_CHECKING:  # the parser's, beside it in the loader

        def peek_event(self) -> yaml.Event: ...

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[str, int] = {}  # anchor -> the expanded size of its node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)  # the error for an unknown anchor
            # An alias inside its own anchor's node (a loop) repeats nothing new: 1.
            self._count(self._sizes.get(event.anchor or "", 1), event)
            return node
        # A key (a value has its key as index) of a mapping that holds the pairs so far.
        is_key = isinstance(parent, yaml.MappingNode) and index is None
        if is_key and len(parent.value) >= MAX_KEYS:  # type: ignore[union-attr]
            raise Refused(f"a mapping of more than {MAX_KEYS} keys by {_where(event)}")
        start = self._nodes
        nested = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise Refused(f"nested more than {MAX_DEPTH} levels deep at {_where(event)}")
        node = super().compose_node(parent, index)
        self._depth -= nested
        self._count(1, event)
        anchor = getattr(event, "anchor", None)  # scalars and collections have one
        if anchor is not None:
            self._sizes[anchor] = self._nodes - start
        return node

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        node = super().compose_scalar_node(anchor)
        if node.tag in (_INT, _FLOAT) and len(node.value) > MAX_NUMBER_LENGTH:
            raise Refused(
                f"a number of {len(node.value)} characters at {_where(node)} "
                f"(at most {MAX_NUMBER_LENGTH})"
            )
        return node

    def _count(self, nodes: int, at: yaml.Event) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise Refused(
                f"more than {MAX_NODES} values (an alias counts as what it repeats) by {_where(at)}"
            )


class _Loader(_Composer, _Parser, SafeConstructor, Resolver):
    """Events from libyaml, nodes from the counting composer (first in line, so the C
    parser's own recursive composer is never used), values from the safe constructor."""

    def __init__(self, text: str) -> None:
        _Parser.__init__(self, text)
        _Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


def load(text: str) -> Document:
    """Compose and construct one YAML (or JSON) document; yaml.YAMLError when it is not one,
    Refused (a YAMLError) when it passes a limit or a value cannot be built."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, None)
        try:
            value = loader.construct_document(node)
        except (ValueError, OverflowError, RecursionError) as e:
            # A value the resolver took for a date or a number that Python cannot make one of.
            raise Refused(f"a value cannot be read: {e}") from e
        return Document(node, value)
    finally:
        loader.dispose()


def _where(at: yaml.Event | yaml.Node) -> str:
    mark = at.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
