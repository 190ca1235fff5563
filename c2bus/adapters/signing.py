"""Record signatures: who wrote a record, checkable by anyone who reads it.

A signing service holds an Ed25519 private key; every record it signs carries two Kafka
headers, ``c2bus_kid`` (the key's id) and ``c2bus_sig`` (the signature). The signature
covers the record's value bytes exactly as they are on Kafka, bound to the record's family
(``decisions``, ``directives.approved``, ``approvals``, ``directives.status``) so that a
record signed for one topic cannot pass for another. Readers trust only the public keys of
their trust store, each for the families it names: the gateway delivers an approved
directive only when a key trusted for ``directives.approved`` signed it, and a lifecycle
step only when a key trusted for ``directives.status`` (the enforcer's, a gateway's) did.

A writer that writes many records together (the enforcer: the decisions, DECIDED steps
and approved directives of a batch of directives, in one transaction) may sign them as a
*record tree*, with one signature: the records are the leaves of a Merkle tree (RFC 9162,
:mod:`c2bus.adapters.merkle`), each leaf its record's family and value under the record
domain tag, and the signature covers the tree's size and root. A third header,
``c2bus_tree``, carries the record's leaf index, the tree's size and the record's inclusion
path. A reader computes the root from its record and the path and checks the signature
over it; a reader of several records of the tree verifies the signature once (a verified
root is remembered).

Local deployments keep their keys in one directory (``C2BUS_SIGNING_DIR``, default
``.c2bus/secrets/signing``): ``<name>.key`` (PKCS#8 PEM, mode 0600, made on first use) and
``trust.json``, the trust store, to which a key made there is added. Rotation: add the new
key to the trust store, switch the signer to it, and remove the old key once nothing it
signed is still to be read. The trust store is read again when it changes.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from c2bus.adapters import merkle
from c2bus.adapters.settings import SigningSettings
from c2bus.errors import ConfigError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "c2bus_sig"
KEY_ID_HEADER = "c2bus_kid"
TREE_HEADER = "c2bus_tree"
_DOMAIN = b"c2bus.record.v1\x00"
_TREE_DOMAIN = b"c2bus.record-tree.v1\x00"
#: verified record trees a reader remembers (a tree's records are read close together)
VERIFIED_TREES = 4096
#: the most records one signature covers (a tree's path is at most 20 hashes)
MAX_TREE = 1 << 20
_TREE_AT = struct.Struct(">II")  # a record's leaf index and its tree's size

#: The families of records that are signed, and who signs them.
DECISIONS = "decisions"
APPROVED = "directives.approved"
APPROVALS = "approvals"
STATUS = "directives.status"
#: The enforcer's checkpoints of the decisions topic's audit chains.
CHECKPOINTS = "audit.checkpoints"
FAMILIES = (DECISIONS, APPROVED, APPROVALS, STATUS, CHECKPOINTS)

Headers = Sequence[tuple[str, bytes]]


def signed_message(family: str, value: bytes) -> bytes:
    """The bytes a signature covers: a domain tag, the record's family, its value."""
    return _DOMAIN + family.encode() + b"\x00" + value


def tree_message(size: int, root: bytes) -> bytes:
    """The bytes a record tree's signature covers: a domain tag, the tree's size, its root."""
    return _TREE_DOMAIN + size.to_bytes(8, "big") + root


def key_id(public: Ed25519PublicKey) -> str:
    """A key's id: the first 16 hex digits of the SHA-256 of its raw public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """Signs records with one private key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.kid = key_id(self.public)
        self._kid = self.kid.encode()

    @classmethod
    def load(cls, path: Path) -> Signer:
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the signing key {path} ({exc.strerror}): set "
                "C2BUS_SIGNING_KEY_FILE, or run `c2bus keys init` for local keys"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM private key: {exc}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 key")
        return cls(private)

    def headers(self, family: str, value: bytes) -> list[tuple[str, bytes]]:
        """The headers that sign ``value`` as a record of ``family``."""
        signature = self._private.sign(signed_message(family, value))
        return [(KEY_ID_HEADER, self._kid), (SIGNATURE_HEADER, signature)]

    def tree_headers(self, records: Sequence[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
        """The headers of each of ``records`` (family, value), signed together as one record
        tree: one signature, and each record's own inclusion path. A single record is
        signed alone."""
        if len(records) == 1:
            return [self.headers(*records[0])]
        if len(records) > MAX_TREE:
            raise ValueError(f"a record tree holds at most {MAX_TREE} records")
        leaves = [merkle.leaf_hash(signed_message(family, value)) for family, value in records]
        root, paths = merkle.proofs(leaves)
        size = len(records)
        signed = [
            (KEY_ID_HEADER, self._kid),
            (SIGNATURE_HEADER, self._private.sign(tree_message(size, root))),
        ]
        return [
            [*signed, (TREE_HEADER, _TREE_AT.pack(index, size) + b"".join(path))]
            for index, path in enumerate(paths)
        ]


@dataclass(frozen=True, slots=True)
class TrustedKey:
    kid: str
    public: Ed25519PublicKey
    families: frozenset[str]
    name: str


class TrustStore:
    """The public keys a reader trusts, each for the record families it names.

    ``check`` answers why a record is not to be trusted (None: it is). The file is read
    again when its modification time changed (looked at most every ``min_interval_s``), so
    a key added or removed for a rotation is in force without a restart."""

    def __init__(
        self, path: Path | None, keys: Iterable[TrustedKey] = (), min_interval_s: float = 1.0
    ) -> None:
        self.path = path
        self.min_interval_s = min_interval_s
        self.keys = {k.kid: k for k in keys}
        self._stamp: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        #: record trees whose signature verified: (key id, signature, message), oldest first
        self._trees: dict[tuple[str, bytes, bytes], None] = {}
        if path is not None:
            self._reload()

    @classmethod
    def of(cls, *entries: tuple[str, Ed25519PublicKey, Iterable[str]]) -> TrustStore:
        """A store of the given (name, public key, families), with no file behind it."""
        keys = [TrustedKey(key_id(pub), pub, frozenset(fam), name) for name, pub, fam in entries]
        return cls(None, keys)

    def check(self, family: str, value: bytes | None, headers: Headers | None) -> str | None:
        """None when a key trusted for ``family`` signed ``value``; else the reason."""
        found = dict(headers or ())
        kid, signature = found.get(KEY_ID_HEADER), found.get(SIGNATURE_HEADER)
        if not kid or not signature:
            return f"unsigned: a {family} record must carry {KEY_ID_HEADER} and {SIGNATURE_HEADER}"
        try:
            name = kid.decode()
        except UnicodeDecodeError:
            return "unknown signing key"
        self._refresh()  # a key added or removed since is in force within a second
        key = self.keys.get(name)
        if key is None:
            return f"unknown signing key {name[:32]!r}"
        if family not in key.families:
            return f"key {name} ({key.name}) is not trusted to sign {family} records"
        at = found.get(TREE_HEADER)
        if at is not None:
            return self._check_tree(key, signature, at, signed_message(family, value or b""))
        try:
            key.public.verify(signature, signed_message(family, value or b""))
        except InvalidSignature:
            return f"bad signature by key {name} ({key.name})"
        return None

    def _check_tree(
        self, key: TrustedKey, signature: bytes, at: bytes, message: bytes
    ) -> str | None:
        """Why a record of a record tree is not to be trusted: its path does not lead to a
        root, or the root is not signed by ``key`` (verified once per tree, then
        remembered)."""
        if len(at) < _TREE_AT.size or (len(at) - _TREE_AT.size) % merkle.DIGEST:
            return f"malformed {TREE_HEADER} header"
        index, size = _TREE_AT.unpack_from(at)
        path = [at[i : i + merkle.DIGEST] for i in range(_TREE_AT.size, len(at), merkle.DIGEST)]
        root = merkle.root_from(index, size, merkle.leaf_hash(message), path)
        if root is None or size > MAX_TREE:
            return f"malformed {TREE_HEADER} header: no path of a tree of {size} records"
        signed = tree_message(size, root)
        seen = (key.kid, signature, signed)
        if seen in self._trees:
            return None
        try:
            key.public.verify(signature, signed)
        except InvalidSignature:
            return f"bad signature by key {key.kid} ({key.name})"
        self._trees[seen] = None
        if len(self._trees) > VERIFIED_TREES:
            del self._trees[next(iter(self._trees))]
        return None

    def _refresh(self) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._checked < self.min_interval_s:
            return
        with self._lock:
            self._checked = now
            self._reload()

    def _reload(self) -> None:
        assert self.path is not None
        try:
            stamp = self.path.stat().st_mtime
        except FileNotFoundError:
            raise ConfigError(
                f"no trust store at {self.path}: set C2BUS_TRUST_FILE, or run "
                "`c2bus keys init` for local keys"
            ) from None
        if stamp == self._stamp:
            return
        self.keys = {k.kid: k for k in read_trust(self.path)}
        self._stamp = stamp
        log.info("trust.loaded", extra={"path": str(self.path), "keys": sorted(self.keys)})


def read_trust(path: Path) -> list[TrustedKey]:
    """The keys of a trust store file: ``{"keys": [{"kid", "name", "families",
    "public_key"}]}``, ``public_key`` the raw Ed25519 key in base64."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        keys = []
        for entry in doc["keys"]:
            raw = base64.b64decode(entry["public_key"], validate=True)
            public = Ed25519PublicKey.from_public_bytes(raw)
            families = frozenset(entry["families"])
            unknown = families - set(FAMILIES)
            if unknown:
                raise ValueError(f"unknown record families {sorted(unknown)}")
            if key_id(public) != entry["kid"]:
                raise ValueError(f"kid {entry['kid']!r} is not the id of its public key")
            keys.append(TrustedKey(entry["kid"], public, families, str(entry.get("name", ""))))
    except OSError as exc:
        raise ConfigError(f"cannot read the trust store {path} ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"trust store {path} is invalid: {exc!r}") from None
    return keys


def trust_entry(name: str, public: Ed25519PublicKey, families: Iterable[str]) -> dict[str, object]:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kid": key_id(public),
        "name": name,
        "families": sorted(families),
        "public_key": base64.b64encode(raw).decode(),
    }


#: Who signs what in a local deployment.
LOCAL_SIGNERS: dict[str, tuple[str, ...]] = {
    "enforcer": (DECISIONS, APPROVED, STATUS, CHECKPOINTS),  # STATUS: the DECIDED step
    "ingest": (APPROVALS,),
    # DELIVERED, the consoles' WILCO, CANTCO and HAVE_DO, and their approvers' approvals
    "gateway": (STATUS, APPROVALS),
}


class LocalKeys:
    """The signing keys of a local deployment and their trust store, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.trust_file = directory / "trust.json"

    def key_file(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def ensure(self, names: Iterable[str] = LOCAL_SIGNERS) -> list[str]:
        """Make the keys of ``names`` that are missing and trust each for its families;
        returns the names made. Processes that start together take turns (a file lock)."""
        names = list(names)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._ensure(names)

    def _ensure(self, names: list[str]) -> list[str]:
        made = []
        for name in names:
            path = self.key_file(name)
            if path.exists():
                continue
            write_private_key(path, Ed25519PrivateKey.generate())
            made.append(name)
        entries = {e["name"]: e for e in self._entries()}
        for name in names:
            public = Signer.load(self.key_file(name)).public
            entry = trust_entry(name, public, LOCAL_SIGNERS[name])
            if entries.get(name) != entry:
                entries[name] = entry
        self._write_trust(list(entries.values()))
        return made

    def signer(self, name: str) -> Signer:
        """The key of ``name``, made (and trusted) on first use."""
        if not self.key_file(name).exists():
            self.ensure([name])
        return Signer.load(self.key_file(name))

    def _entries(self) -> list[dict[str, object]]:
        if not self.trust_file.exists():
            return []
        doc = json.loads(self.trust_file.read_text(encoding="utf-8"))
        entries: list[dict[str, object]] = doc.get("keys", [])
        return entries

    def _write_trust(self, entries: list[dict[str, object]]) -> None:
        text = json.dumps({"keys": sorted(entries, key=lambda e: str(e["name"]))}, indent=2)
        if self.trust_file.exists() and self.trust_file.read_text(encoding="utf-8") == text:
            return
        partial = self.trust_file.with_suffix(".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(self.trust_file)  # readers see the old store or the new, never half


def write_private_key(path: Path, private: Ed25519PrivateKey) -> None:
    """Write ``private`` (PKCS#8 PEM) to a new file readable by its owner only, from the
    start."""
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def signer_for(settings: SigningSettings, name: str) -> Signer:
    """The key service ``name`` signs with: its key file, or (local) its key in the local
    directory, made and trusted on first use."""
    if settings.key_file is not None:
        return Signer.load(settings.key_file)
    if settings.local:
        return LocalKeys(settings.dir).signer(name)
    return Signer.load(settings.dir / f"{name}.key")


def trust_for(settings: SigningSettings) -> TrustStore:
    """The trust store a reader checks signatures with (local: its directory's, made with
    the local signers' keys if it does not exist yet)."""
    if settings.local and not settings.trust_file.exists():
        LocalKeys(settings.dir).ensure()
    return TrustStore(settings.trust_file)
