"""Tokens: JWT verification at the edge, and minting for local development.

Accepted tokens are HS256 JWTs signed with the configured key, with ``sub``, ``exp``,
``aud`` and ``iss`` required and checked, plus the c2bus claims ``nation``, ``clearance``,
``unit`` and ``roles``. Any other algorithm (``none`` included) is refused: the algorithm
list is fixed here, never read from the token.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

from ..domain.identity import Identity
from ..domain.labels import Classification
from ..errors import AuthError, ConfigError

ALGORITHM = "HS256"
MIN_KEY_BYTES = 32
_NATION = re.compile(r"^[A-Z]{3}$")


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, if there is one."""
    scheme, _, value = authorization.partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and token else None


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


class TokenVerifier:
    def __init__(self, key: bytes, audience: str, issuer: str, leeway_s: int = 30) -> None:
        self._key = key
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s

    def verify(self, token: str) -> Identity:
        """The identity in a valid token; :class:`AuthError` naming the reason otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
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
            raise AuthError(f"token algorithm not allowed (only {ALGORITHM})") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return identity_from_claims(claims)


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
    return Identity(str(claims["sub"]), nation, clearance, unit, frozenset(roles))


def mint(
    key: bytes,
    identity: Identity,
    *,
    audience: str,
    issuer: str,
    ttl_s: int = 8 * 3600,
    now: float | None = None,
) -> str:
    """A signed token for ``identity`` (local development and tests)."""
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
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)
