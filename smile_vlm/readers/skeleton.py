"""Confusable skeletons of subject names (Unicode TS #39, section 4), for telling people apart.

Two subject names that look alike on screen (Latin 'A' and Cyrillic 'А', '1' and 'l') must be
one identity to the leak check and the index, or a person could sit in train and test of one
fold under two spellings. The data is Unicode's confusables.txt as the confusable-homoglyphs
package ships it: for each character, the characters of its confusable class. Each class is
mapped to one member, its lowest single code point, so two names have equal skeletons exactly
when they are equal character by character up to confusable classes.

Unlike TS #39 proper, only single characters are mapped: a class whose prototype is a sequence
(the 'm' that looks like 'rn') keeps its single characters apart from that sequence.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def _representatives() -> dict[str, str]:
    """Character -> the lowest single code point of its confusable class (classes of two or more)."""
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(node, node) != root:  # path compression
            parent[node], node = root, parent[node]
        return root

    def rank(node: str) -> tuple[bool, str]:  # single code points first, then the lowest
        return len(node) != 1, node

    for character, alikes in confusables_data.items():
        for alike in alikes:
            a, b = find(character), find(alike["c"])
            if a != b:
                keep, drop = sorted((a, b), key=rank)
                parent[drop] = keep
    return {node: find(node) for node in parent if len(node) == 1 and len(find(node)) == 1}


def skeleton(text: str) -> str:
    """``text`` with every character replaced by the representative of its confusable class."""
    table = _representatives()
    return "".join(table.get(character, character) for character in text)
