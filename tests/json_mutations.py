"""Hypothesis strategies that break a JSON-like document with a few random edits (for property tests).

An edit picks any node of the document (the root included) and replaces it with a random value,
deletes it from its parent, or inserts a random entry into it (a key into an object, an item into
a list).
"""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["", "test", "accuracy", "coop", "few_shot", "default", "n", "0" * 16])
)


def values(keys: st.SearchStrategy = st.text(max_size=8)) -> st.SearchStrategy:
    """Random JSON-like values: scalars, lists and objects nested a little."""
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=8,
    )


def _locations(node: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _locations(child, path + (key,))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _locations(child, path + (index,))
    return found


def _node(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw, document: Any, keys: st.SearchStrategy = st.text(max_size=8), max_edits: int = 3) -> Any:
    """``document`` (left unchanged) after 1 to ``max_edits`` random edits."""
    doc = copy.deepcopy(document)
    new_values = values(keys)
    for _ in range(draw(st.integers(1, max_edits))):
        path = draw(st.sampled_from(_locations(doc)))
        edit = draw(st.sampled_from(["replace", "delete", "insert"]))
        node = _node(doc, path)
        if edit == "insert" and isinstance(node, dict):
            node[draw(keys)] = draw(new_values)
        elif edit == "insert" and isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), draw(new_values))
        elif edit == "delete" and path:
            del _node(doc, path[:-1])[path[-1]]
        elif path:
            _node(doc, path[:-1])[path[-1]] = draw(new_values)
        else:
            doc = draw(new_values)
    return doc
