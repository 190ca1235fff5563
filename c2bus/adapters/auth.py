"""Tokens: JWT verification at the edge, and minting for local development.

Accepted tokens are JWTs with ``sub``, ``exp``, ``aud`` and ``iss`` required and checked
(``nbf`` too when present), plus the c2bus claims ``nation``, ``clearance``, ``unit`` and
``roles`` (and ``acts_for``, the units besides its own it may issue directives for),
signed with one of:

- ``EdDSA`` (Ed25519) or ``RS256``, by a key of a JWKS file, found by the token's ``kid``;
  the key's own ``alg`` must be the token's;
- ``HS256``, by the shared key of the key file.

Which key checks a token never depends on the token alone: an ``HS256`` token is checked
with the shared key only, never with a public key (no algorithm confusion), an ``RS256`` or
``EdDSA`` token only with the JWKS key of that algorithm. Every other algorithm, ``none``
included, is refused.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from c2bus.adapters.settings import AuthSettings
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


def load_or_create_key(path: Path) -> bytes:
    """The signing key in ``path``; generated (mode 0600) when the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return load_key(path)


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
    ) -> None:
        """``key``: the HS256 shared key, or None to refuse HS256 tokens;
        ``public_keys``: EdDSA and RS256 keys by kid (see :func:`load_jwks`)."""
        self._key = key
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
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("token signature does not verify") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(f"token algorithm not allowed: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        jti = claims.get("jti")
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
    """The verifier a service uses: the shared key of the key file and, when configured, the
    public keys of a JWKS file and a revocation list."""
    public = load_jwks(auth.jwks_file) if auth.jwks_file is not None else None
    revoked = RevocationList(auth.revocation_file) if auth.revocation_file is not None else None
    return TokenVerifier(
        load_key(auth.key_file),
        auth.audience,
        auth.issuer,
        public_keys=public,
        revocations=revoked,
    )
