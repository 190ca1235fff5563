"""Merkle tree hashes and inclusion proofs are RFC 9162's: the reference tree heads and
paths of Certificate Transparency, and every path of every small tree verifies for its
own leaf at its own index only."""

from __future__ import annotations

import pytest

from c2bus.adapters.merkle import leaf_hash, proofs, root_from

# The Certificate Transparency reference leaves, the tree heads of the first n of them
# (n = 1..8), and two published inclusion paths in the tree of all eight.
LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
PATHS = {
    0: [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    5: [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def test_tree_heads_and_paths_are_the_reference_ones() -> None:
    hashes = [leaf_hash(leaf) for leaf in LEAVES]
    for n in range(1, 9):
        root, _ = proofs(hashes[:n])
        assert root.hex() == ROOTS[n - 1], n
    root, paths = proofs(hashes)
    for index, path in PATHS.items():
        assert [p.hex() for p in paths[index]] == path
        assert root_from(index, 8, hashes[index], paths[index]) == root


@pytest.mark.parametrize("size", range(1, 41))
def test_every_path_proves_its_own_leaf_at_its_own_index_only(size: int) -> None:
    hashes = [leaf_hash(b"record %d" % i) for i in range(size)]
    root, paths = proofs(hashes)
    other = leaf_hash(b"forged")
    for index, path in enumerate(paths):
        assert root_from(index, size, hashes[index], path) == root
        assert root_from(index, size, other, path) != root
        for wrong in {index - 1, index + 1, index ^ 2, size, -1} - {index}:
            assert root_from(wrong, size, hashes[index], path) != root
        # (a path may fit another size too: the signature covers the size with the root)
        assert root_from(index, 2 * size + 1, hashes[index], path) is None
        if path:
            assert root_from(index, size, hashes[index], path[:-1]) != root
            tampered = [*path[:-1], bytes(32)]
            assert root_from(index, size, hashes[index], tampered) != root
        assert root_from(index, size, hashes[index], [*path, bytes(32)]) != root


def test_a_tree_has_a_leaf() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        proofs([])
