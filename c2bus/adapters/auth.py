"""Tokens: JWT verification at the edge, and minting for local development.

Accepted tokens are JWTs with ``sub``, ``exp``, ``aud`` and ``iss`` required and checked
(``nbf`` too when present), plus the c2bus claims ``nation``, ``clearance``, ``unit`` and
``roles`` (and ``acts_for``, the units besides its own it may issue directives for),
signed with one of:

- ``EdDSA`` (Ed25519) or ``RS256``, by a key of a JWKS file, found by the token's ``kid``;
  the key's own ``alg`` must be the token's (a local deployment's keys: :class:`LocalTokenKeys`,
  whose JWKS verifiers read; they hold public keys only);
- ``HS256``, by a shared key, only where configured explicitly and never beside a JWKS.

A token lives at most ``max_ttl_s`` (``exp - iat``, ``iat`` required), and carries a ``jti``
wherever tokens can be revoked.

Which key checks a token never depends on the token alone: an ``HS256`` token is checked
with the shared key only, never with a public key (no algorithm confusion), an ``RS256`` or
``EdDSA`` token only with the JWKS key of that algorithm. Every other algorithm, ``none``
included, is refused.
"""

from __future__ import annotations

import fcntl
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from c2bus.adapters.settings import AuthSettings
from c2bus.adapters.signing import key_id, write_private_key
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.errors import AuthError, ConfigError, Refused

ALGORITHM = "HS256"  # the shared-key algorithm (local development, ``c2bus token``)
ASYMMETRIC = {"EdDSA": "OKP", "RS256": "RSA"}  # algorithm -> the JWK key type it needs
ALGORITHMS = (*ASYMMETRIC, ALGORITHM)
MIN_KEY_BYTES = 32
_NATION = re.compile(r"^[A-Z]{3}$")


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, if there is one."""
    scheme, _, value = authorization.partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(verifier: TokenVerifier, authorization: str) -> Identity:
    """The verified identity of an HTTP request's ``Authorization`` header, or a refusal
    (401) that says why."""
    token = bearer_token(authorization)
    if token is None:
        raise Refused("unauthorized", "a bearer token is required")
    try:
        return verifier.verify(token)
    except AuthError as exc:
        raise Refused("unauthorized", str(exc)) from exc


def load_key(path: Path) -> bytes:
    try:
        key = path.read_text(encoding="utf-8").strip().encode()
    except OSError as exc:
        raise ConfigError(f"cannot read the token key {path}: {exc.strerror}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the token key in {path} is shorter than {MIN_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key from a JWKS file."""

    kid: str
    alg: str
    key: Any  # a cryptography public key object


def load_jwks(path: Path) -> dict[str, PublicKey]:
    """The public keys of a JWKS file, by ``kid``; :class:`ConfigError` on anything off.

    Every key needs ``kid``, ``alg`` (``EdDSA`` or ``RS256``) and the matching ``kty``;
    private key material is refused (a JWKS given to verifiers must be public).
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the JWKS file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"the JWKS file {path} is not JSON: {exc}") from exc
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"the JWKS file {path} has no 'keys' list")
    keys: dict[str, PublicKey] = {}
    for index, jwk in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(jwk, dict):
            raise ConfigError(f"{where} is not an object")
        kid, alg, kty = jwk.get("kid"), jwk.get("alg"), jwk.get("kty")
        if not isinstance(kid, str) or not kid:
            raise ConfigError(f"{where} has no 'kid'")
        if alg not in ASYMMETRIC:
            raise ConfigError(f"{where} ({kid}): 'alg' must be one of {', '.join(ASYMMETRIC)}")
        if kty != ASYMMETRIC[alg]:
            raise ConfigError(f"{where} ({kid}): {alg} needs kty {ASYMMETRIC[alg]}, not {kty}")
        if "d" in jwk:
            raise ConfigError(f"{where} ({kid}) holds private key material: publish public keys")
        if kid in keys:
            raise ConfigError(f"{where}: kid {kid} appears twice")
        try:
            key = jwt.PyJWK(jwk).key
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{where} ({kid}) is not a usable key: {exc}") from exc
        keys[kid] = PublicKey(kid, alg, key)
    return keys


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified token: who it speaks for, until when (epoch seconds), and its ``jti``."""

    identity: Identity
    expires_at: float
    token_id: str | None = None


class RevocationList:
    """Revoked tokens and subjects, from a text file that can change while services run.

    One entry per line: ``jti:<token id>`` or ``sub:<subject>``; ``#`` starts a comment.
    The file is read again when its modification time changes, checked at most every
    ``min_interval_s``. Fail closed: while the file cannot be read, every token is refused.
    """

    def __init__(self, path: Path, min_interval_s: float = 1.0) -> None:
        self.path = path
        self.min_interval_s = min_interval_s
        self.token_ids: frozenset[str] = frozenset()
        self.subjects: frozenset[str] = frozenset()
        self.error: str | None = None
        #: changes each time the entries (or the error) change: watchers compare it
        self.generation = 0
        self._mtime: float | None = None
        self._checked = float("-inf")
        self.refresh(force=True)
        if self.error is not None:  # at start-up a missing or bad list is a configuration error
            raise ConfigError(self.error)

    def refresh(self, force: bool = False) -> bool:
        """Reload if the file changed; True when the entries (or the error) changed."""
        now = time.monotonic()
        if not force and now - self._checked < self.min_interval_s:
            return False
        self._checked = now
        changed = self._reload()
        if changed:
            self.generation += 1
        return changed

    def _reload(self) -> bool:
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime and self.error is None:
                return False
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            changed = self.error is None
            self.error = f"cannot read the revocation list {self.path}: {exc.strerror}"
            self._mtime = None
            return changed
        token_ids, subjects = set(), set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            kind, _, value = line.partition(":")
            if kind == "jti" and value:
                token_ids.add(value.strip())
            elif kind == "sub" and value:
                subjects.add(value.strip())
            else:
                changed = self.error is None
                self.error = f"{self.path}:{number}: expected 'jti:<id>' or 'sub:<subject>'"
                self._mtime = None
                return changed
        self.token_ids, self.subjects = frozenset(token_ids), frozenset(subjects)
        self.error, self._mtime = None, mtime
        return True

    def revoked(self, verified: Verified) -> str | None:
        """Why ``verified`` must be refused, or None."""
        if self.error is not None:
            return "revocation list unavailable"
        if verified.token_id is not None and verified.token_id in self.token_ids:
            return "token revoked"
        if verified.identity.subject in self.subjects:
            return "subject revoked"
        return None


class TokenVerifier:
    def __init__(
        self,
        key: bytes | None,
        audience: str,
        issuer: str,
        leeway_s: int = 30,
        *,
        public_keys: Mapping[str, PublicKey] | None = None,
        revocations: RevocationList | None = None,
        max_ttl_s: int = 24 * 3600,
    ) -> None:
        """``key``: the HS256 shared key, or None to refuse HS256 tokens;
        ``public_keys``: EdDSA and RS256 keys by kid (see :func:`load_jwks`); never both."""
        if key is not None and public_keys:
            raise ConfigError(
                "an HS256 shared key is accepted never beside a JWKS: its holders could mint "
                "any identity the public keys vouch for"
            )
        self._key = key
        self.max_ttl_s = max_ttl_s
        self._public = dict(public_keys or {})
        self.revocations = revocations
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s

    def _key_for(self, token: str) -> tuple[str, Any]:
        """The algorithm and key that must verify ``token``, chosen by configuration."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError(f"token algorithm {alg!r} not allowed ({', '.join(ALGORITHMS)})")
        if alg == ALGORITHM:
            if self._key is None:
                raise AuthError("HS256 tokens are not accepted here")
            return alg, self._key
        kid = header.get("kid")
        entry = self._public.get(kid) if isinstance(kid, str) else None
        if entry is None:
            raise AuthError(f"token signed by an unknown key (kid {kid!r})")
        if entry.alg != alg:
            raise AuthError(f"key {kid} verifies {entry.alg} tokens, not {alg}")
        return alg, entry.key

    def verify(self, token: str) -> Identity:
        """The identity in a valid token; :class:`AuthError` naming the reason otherwise."""
        return self.verify_token(token).identity

    def verify_token(self, token: str) -> Verified:
        """The identity and expiry of a valid token; :class:`AuthError` otherwise."""
        alg, key = self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("token signature does not verify") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(f"token algorithm not allowed: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if lifetime > self.max_ttl_s:
            raise AuthError(
                f"token lifetime {lifetime:.0f}s is longer than the {self.max_ttl_s}s allowed"
            )
        jti = claims.get("jti")
        if self.revocations is not None and not (isinstance(jti, str) and jti):
            raise AuthError("token has no 'jti': tokens here must be revocable")
        verified = Verified(
            identity_from_claims(claims),
            float(claims["exp"]),
            jti if isinstance(jti, str) else None,
        )
        if self.revocations is not None:
            self.revocations.refresh()
            reason = self.revocations.revoked(verified)
            if reason is not None:
                raise AuthError(reason)
        return verified


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    nation = claims.get("nation")
    if not isinstance(nation, str) or not _NATION.match(nation):
        raise AuthError("token claim 'nation' must be an ISO 3166-1 alpha-3 code")
    try:
        clearance = Classification(claims.get("clearance"))
    except ValueError as exc:
        raise AuthError("token claim 'clearance' is not a known classification") from exc
    unit = claims.get("unit")
    if not isinstance(unit, str) or not unit:
        raise AuthError("token claim 'unit' is missing")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthError("token claim 'roles' must be a list of strings")
    acts_for = claims.get("acts_for", [])
    if not isinstance(acts_for, list) or not all(isinstance(u, str) and u for u in acts_for):
        raise AuthError("token claim 'acts_for' must be a list of unit ids")
    return Identity(
        str(claims["sub"]), nation, clearance, unit, frozenset(roles), frozenset(acts_for)
    )


def mint(
    key: Any,
    identity: Identity,
    *,
    audience: str,
    issuer: str,
    ttl_s: int = 8 * 3600,
    now: float | None = None,
    algorithm: str = ALGORITHM,
    kid: str | None = None,
) -> str:
    """A signed token for ``identity`` (local development and tests): HS256 with a shared
    key by default, or ``algorithm`` with a private key and its ``kid``."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": identity.subject,
        "nation": identity.nation,
        "clearance": identity.clearance.value,
        "unit": identity.unit,
        "roles": sorted(identity.roles),
        "aud": audience,
        "iss": issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": secrets.token_urlsafe(12),
    }
    if identity.acts_for:
        claims["acts_for"] = sorted(identity.acts_for)
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def verifier_for(auth: AuthSettings) -> TokenVerifier:
    """The verifier a service uses: public keys (the local deployment's JWKS, made on first
    use, or the configured one) or, by explicit opt-in, an HS256 key; and, when configured,
    a revocation list."""
    revoked = RevocationList(auth.revocation_file) if auth.revocation_file is not None else None
    if auth.hs256_key_file is not None:
        key, public = load_key(auth.hs256_key_file), None
    else:
        key = None
        if auth.jwks_file is None:
            local = LocalTokenKeys(auth.dir)
            local.ensure()
            public = load_jwks(local.jwks_file)
        else:
            public = load_jwks(auth.jwks_file)
    return TokenVerifier(
        key,
        auth.audience,
        auth.issuer,
        public_keys=public,
        revocations=revoked,
        max_ttl_s=auth.max_ttl_s,
    )


#: The local keys that mint tokens: ``c2bus token`` and the console's, and the simulator's.
LOCAL_ISSUER = "local-issuer"
SIMULATOR = "simulator"
LOCAL_TOKEN_KEYS = (LOCAL_ISSUER, SIMULATOR)

Mint = Callable[[Identity, int], str]


class LocalTokenKeys:
    """The token keys of a local deployment: ``<name>.key`` (Ed25519, PKCS#8 PEM, mode 0600)
    for each minter, and ``jwks.json``, their public keys, which is all verifiers read."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.jwks_file = directory / "jwks.json"

    def ensure(self, names: tuple[str, ...] = LOCAL_TOKEN_KEYS) -> list[str]:
        """Make the keys of ``names`` that are missing and publish every key's public half;
        returns the names made. Processes starting together take turns (a file lock)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            made = []
            for name in names:
                path = self.dir / f"{name}.key"
                if not path.exists():
                    write_private_key(path, Ed25519PrivateKey.generate())
                    made.append(name)
            keys = sorted(self.dir.glob("*.key"))
            jwks = {"keys": [self._jwk(path.stem, self._load(path)) for path in keys]}
            text = json.dumps(jwks, indent=2)
            if not self.jwks_file.exists() or self.jwks_file.read_text() != text:
                partial = self.jwks_file.with_suffix(".partial")
                partial.write_text(text, encoding="utf-8")
                partial.replace(self.jwks_file)
            return made

    def mint(
        self,
        name: str,
        identity: Identity,
        *,
        audience: str,
        issuer: str,
        ttl_s: int,
        now: float | None = None,
    ) -> str:
        """A token for ``identity``, signed with the key of ``name`` (made if missing)."""
        path = self.dir / f"{name}.key"
        if not path.exists():
            self.ensure((name,))
        private = self._load(path)
        return mint(
            private,
            identity,
            audience=audience,
            issuer=issuer,
            ttl_s=ttl_s,
            now=now,
            algorithm="EdDSA",
            kid=self._kid(name, private),
        )

    @staticmethod
    def _load(path: Path) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 key")
        return key

    @staticmethod
    def _kid(name: str, private: Ed25519PrivateKey) -> str:
        return f"{name}-{key_id(private.public_key())[:8]}"

    def _jwk(self, name: str, private: Ed25519PrivateKey) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
        return {**jwk, "kid": self._kid(name, private), "alg": "EdDSA", "use": "sig"}


def local_minter(auth: AuthSettings, name: str) -> Mint:
    """How local tooling mints tokens (``name``: which local key): EdDSA with the local
    deployment's key, or HS256 where that was opted into. Tokens of an identity provider
    (``C2BUS_JWT_JWKS_FILE``) are its to issue, never c2bus's."""
    if auth.hs256_key_file is not None:
        shared = load_key(auth.hs256_key_file)

        def mint_hs256(identity: Identity, ttl_s: int) -> str:
            return mint(shared, identity, audience=auth.audience, issuer=auth.issuer, ttl_s=ttl_s)

        return mint_hs256
    if auth.jwks_file is not None:
        raise ConfigError(
            "tokens here come from the identity provider whose keys C2BUS_JWT_JWKS_FILE "
            "holds: c2bus mints tokens for a local deployment only"
        )
    keys = LocalTokenKeys(auth.dir)

    def mint_local(identity: Identity, ttl_s: int) -> str:
        return keys.mint(name, identity, audience=auth.audience, issuer=auth.issuer, ttl_s=ttl_s)

    return mint_local
