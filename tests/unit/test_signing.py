"""Record signatures: a trust store says exactly why a record is not to be trusted, signed
alone or in a record tree; local keys are made once, readable by their owner only, and
trusted for what they sign."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from c2bus.adapters.settings import SigningSettings
from c2bus.adapters.signing import (
    APPROVALS,
    APPROVED,
    DECISIONS,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    STATUS,
    TREE_HEADER,
    VERIFIED_TREES,
    LocalKeys,
    Signer,
    TrustStore,
    signer_for,
    trust_entry,
    trust_for,
)
from c2bus.errors import ConfigError

VALUE = b'{"id": "d-1", "data": {"target": "POL-12BDE"}}'


def test_the_trust_store_names_what_is_wrong_with_a_record() -> None:
    enforcer = Signer(Ed25519PrivateKey.generate())
    ingest = Signer(Ed25519PrivateKey.generate())
    trust = TrustStore.of(
        ("enforcer", enforcer.public, [DECISIONS, APPROVED]), ("ingest", ingest.public, [APPROVALS])
    )
    signed = enforcer.headers(APPROVED, VALUE)
    assert trust.check(APPROVED, VALUE, signed) is None
    assert trust.check(APPROVED, VALUE, [("content-type", b"x"), *signed]) is None
    assert (trust.check(APPROVED, VALUE, None) or "").startswith("unsigned")
    assert (trust.check(APPROVED, VALUE, signed[:1]) or "").startswith("unsigned")
    stranger = Signer(Ed25519PrivateKey.generate())
    assert "unknown signing key" in (
        trust.check(APPROVED, VALUE, stranger.headers(APPROVED, VALUE)) or ""
    )
    by_ingest = trust.check(APPROVED, VALUE, ingest.headers(APPROVED, VALUE)) or ""
    assert "(ingest) is not trusted to sign directives.approved" in by_ingest
    altered = VALUE.replace(b"POL-12BDE", b"POL-12BDF")
    assert (trust.check(APPROVED, altered, signed) or "").startswith("bad signature")
    # the family is signed too: an approved directive's signature is no decision's
    assert (trust.check(DECISIONS, VALUE, signed) or "").startswith("bad signature")
    swapped = [(KEY_ID_HEADER, enforcer.kid.encode()), (SIGNATURE_HEADER, b"\x00" * 64)]
    assert (trust.check(APPROVED, VALUE, swapped) or "").startswith("bad signature")
    assert trust.check(APPROVED, VALUE, [(KEY_ID_HEADER, b"\xff"), (SIGNATURE_HEADER, b"x")])


def test_a_record_tree_signs_each_of_its_records_and_nothing_else() -> None:
    """One signature over the Merkle root of a batch's records (family and value of each):
    each record verifies on its own with its path, and only as the family it was signed
    as, at its own place in the tree."""
    enforcer = Signer(Ed25519PrivateKey.generate())
    ingest = Signer(Ed25519PrivateKey.generate())
    trust = TrustStore.of(
        ("enforcer", enforcer.public, [DECISIONS, APPROVED, STATUS]),
        ("ingest", ingest.public, [APPROVALS]),
    )
    decision, status, release = b'{"d": 1}', b'{"s": 1}', VALUE
    records = [(DECISIONS, decision), (STATUS, status), (APPROVED, release)] * 3
    tree = enforcer.tree_headers(records)
    assert len(tree) == len(records)
    for (family, value), own in zip(records, tree, strict=True):
        assert [name for name, _ in own] == [KEY_ID_HEADER, SIGNATURE_HEADER, TREE_HEADER]
        assert trust.check(family, value, own) is None
    assert len({dict(own)[SIGNATURE_HEADER] for own in tree}) == 1  # one signature
    # a record passed off as another family (the decision as a release) does not verify
    assert (trust.check(APPROVED, decision, tree[0]) or "").startswith("bad signature by key")
    altered = release.replace(b"POL-12BDE", b"POL-12BDF")
    assert (trust.check(APPROVED, altered, tree[2]) or "").startswith("bad signature")
    # another record's path, or its own path moved to another place or another tree size
    assert (trust.check(APPROVED, release, tree[1]) or "").startswith("bad signature")
    at = dict(tree[2])[TREE_HEADER]
    index, size = struct.unpack_from(">II", at)
    for moved in (struct.pack(">II", index ^ 1, size), struct.pack(">II", index, size + 1)):
        forged = [*tree[2][:2], (TREE_HEADER, moved + at[8:])]
        assert trust.check(APPROVED, release, forged) is not None
    for broken in (b"", at[:7], at + b"x", struct.pack(">II", size, size) + at[8:]):
        why = trust.check(APPROVED, release, [*tree[2][:2], (TREE_HEADER, broken)]) or ""
        assert why.startswith("malformed c2bus_tree header"), broken
    # a key not trusted for the family is refused before the tree is looked at
    assert "not trusted to sign directives.approved" in (
        trust.check(APPROVED, release, ingest.tree_headers(records)[2]) or ""
    )
    # one record alone is signed as before, with no tree
    alone = enforcer.tree_headers(records[:1])
    assert [name for name, _ in alone[0]] == [KEY_ID_HEADER, SIGNATURE_HEADER]
    assert trust.check(DECISIONS, decision, alone[0]) is None


def test_a_reader_verifies_a_record_trees_signature_once() -> None:
    enforcer = Signer(Ed25519PrivateKey.generate())
    trust = TrustStore.of(("enforcer", enforcer.public, [DECISIONS, STATUS]))
    verified: list[bytes] = []
    public = trust.keys[enforcer.kid].public

    class Counting:
        def verify(self, signature: bytes, message: bytes) -> None:
            verified.append(message)
            public.verify(signature, message)

    key = trust.keys[enforcer.kid]
    trust.keys[enforcer.kid] = type(key)(key.kid, Counting(), key.families, key.name)  # type: ignore[arg-type]

    def batch(n: int, name: bytes = b"d") -> list[tuple[str, bytes]]:
        return [(DECISIONS, b"%s%d" % (name, n)), (STATUS, b"s%d" % n)] * 4

    trees = [enforcer.tree_headers(batch(n)) for n in range(3)]
    for n, tree in enumerate(trees):
        for (family, value), own in zip(batch(n), tree, strict=True):
            assert trust.check(family, value, own) is None
    assert len(verified) == 3  # once per tree, not per record
    bad = [trees[0][0][0], (SIGNATURE_HEADER, b"\x00" * 64), trees[0][0][2]]
    assert (trust.check(DECISIONS, b"d0", bad) or "").startswith("bad signature")
    assert trust.check(DECISIONS, b"d0", bad) is not None  # a failure is never remembered
    for n in range(VERIFIED_TREES + 1):  # the memory is bounded: the oldest tree is forgotten
        assert trust.check(DECISIONS, b"x%d" % n, enforcer.tree_headers(batch(n, b"x"))[0]) is None
    verified.clear()
    assert trust.check(DECISIONS, b"d0", trees[0][0]) is None
    assert len(verified) == 1


def test_local_keys_are_made_once_private_and_trusted_for_what_they_sign(
    tmp_path: Path,
) -> None:
    keys = LocalKeys(tmp_path / "signing")
    assert keys.ensure() == ["enforcer", "ingest", "gateway"]
    assert keys.ensure() == []  # made once
    for name in ("enforcer", "ingest", "gateway"):
        assert stat.S_IMODE(os.stat(keys.key_file(name)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys.dir).st_mode) == 0o700
    trust = TrustStore(keys.trust_file)
    enforcer = keys.signer("enforcer")
    assert trust.check(DECISIONS, VALUE, enforcer.headers(DECISIONS, VALUE)) is None
    ingest = keys.signer("ingest")
    assert trust.check(APPROVALS, VALUE, ingest.headers(APPROVALS, VALUE)) is None
    assert trust.check(DECISIONS, VALUE, ingest.headers(DECISIONS, VALUE)) is not None
    # lifecycle steps: the enforcer's DECIDED and a gateway's; a gateway signs nothing else
    gateway = keys.signer("gateway")
    for writer in (enforcer, gateway):
        assert trust.check(STATUS, VALUE, writer.headers(STATUS, VALUE)) is None
    assert trust.check(STATUS, VALUE, ingest.headers(STATUS, VALUE)) is not None
    assert trust.check(APPROVED, VALUE, gateway.headers(APPROVED, VALUE)) is not None

    # a service of a fresh local deployment makes its own key on first use
    settings = SigningSettings.from_env({"C2BUS_SIGNING_DIR": str(tmp_path / "fresh")})
    assert settings.local
    signer = signer_for(settings, "enforcer")
    assert trust_for(settings).check(APPROVED, VALUE, signer.headers(APPROVED, VALUE)) is None


def test_a_rotation_needs_no_restart_of_the_readers(tmp_path: Path) -> None:
    keys = LocalKeys(tmp_path)
    keys.ensure(["enforcer"])
    trust = TrustStore(keys.trust_file, min_interval_s=0)
    old = keys.signer("enforcer")
    new = Signer(Ed25519PrivateKey.generate())
    assert trust.check(APPROVED, VALUE, new.headers(APPROVED, VALUE)) is not None
    doc = json.loads(keys.trust_file.read_text())
    doc["keys"].append(trust_entry("enforcer-2", new.public, [APPROVED]))
    keys.trust_file.write_text(json.dumps(doc))
    os.utime(keys.trust_file, (1, 1))  # a new modification time, whatever the clock
    assert trust.check(APPROVED, VALUE, new.headers(APPROVED, VALUE)) is None
    assert trust.check(APPROVED, VALUE, old.headers(APPROVED, VALUE)) is None  # both, meanwhile
    doc["keys"] = [k for k in doc["keys"] if k["name"] != "enforcer"]  # the old one retired
    keys.trust_file.write_text(json.dumps(doc))
    os.utime(keys.trust_file, (2, 2))
    assert "unknown signing key" in (
        trust.check(APPROVED, VALUE, old.headers(APPROVED, VALUE)) or ""
    )
    assert trust.check(APPROVED, VALUE, new.headers(APPROVED, VALUE)) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is invalid"),
        ('{"keys": [{"kid": "x"}]}', "is invalid"),
        ('{"keys": [{"kid": "x", "families": ["decisions"], "public_key": "!!"}]}', "invalid"),
    ],
)
def test_a_broken_trust_store_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "trust.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        TrustStore(path)
    with pytest.raises(ConfigError, match="no trust store at"):
        TrustStore(tmp_path / "missing.json")


def test_a_trust_entry_must_name_its_own_key_and_known_families(tmp_path: Path) -> None:
    key = Signer(Ed25519PrivateKey.generate())
    path = tmp_path / "trust.json"
    wrong_kid = trust_entry("enforcer", key.public, [APPROVED]) | {"kid": "0" * 16}
    path.write_text(json.dumps({"keys": [wrong_kid]}))
    with pytest.raises(ConfigError, match="is not the id of its public key"):
        TrustStore(path)
    path.write_text(json.dumps({"keys": [trust_entry("enforcer", key.public, ["sa"])]}))
    with pytest.raises(ConfigError, match="unknown record families"):
        TrustStore(path)
    missing = tmp_path / "nothing.key"
    with pytest.raises(ConfigError, match="cannot read the signing key"):
        Signer.load(missing)
