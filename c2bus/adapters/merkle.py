"""Merkle tree hashes and inclusion proofs, exactly as RFC 9162 (Certificate Transparency
2.0) section 2.1 defines them, over SHA-256: what lets one signature cover many records,
each of which is then checked alone.

- ``leaf_hash(d) = SHA-256(0x00 || d)``; a node ``SHA-256(0x01 || left || right)``; the
  tree of n > 1 leaves splits at k, the largest power of two below n (section 2.1.1).
- ``proofs(leaves)`` gives the tree's root and, for each leaf, its inclusion path
  (section 2.1.3.1); ``root_from(index, size, leaf, path)`` computes the root a path
  proves (section 2.1.3.2), or None when the path cannot be one for that index and size.

The tests check roots and proofs against the reference vectors of RFC 6962's
implementations (the tree heads of sizes 1 to 8 and their published inclusion paths).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

DIGEST = 32
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the tree over ``leaves`` (leaf hashes, at least one) and each leaf's
    inclusion path, nearest sibling first."""
    if not leaves:
        raise ValueError("a tree has at least one leaf")
    paths: list[list[bytes]] = [[] for _ in leaves]

    def subtree(start: int, end: int) -> bytes:
        if end - start == 1:
            return leaves[start]
        k = 1 << ((end - start - 1).bit_length() - 1)  # largest power of two < n
        left, right = subtree(start, start + k), subtree(start + k, end)
        for i in range(start, start + k):
            paths[i].append(right)
        for i in range(start + k, end):
            paths[i].append(left)
        return _node(left, right)

    return subtree(0, len(leaves)), paths


def root_from(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` proves ``leaf`` (a leaf hash) to be leaf ``index`` of a tree
    of ``size`` leaves under; None if it cannot (index out of range, a path too short or
    too long for the tree)."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
