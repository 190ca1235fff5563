"""Token verification refuses every token it should; minted tokens round-trip."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest

from services.domain.identity import Identity
from services.domain.labels import Classification
from services.errors import AuthError, ConfigError
from services.runtime.auth import TokenVerifier, bearer_token, load_key, load_or_create_key, mint

KEY = b"k" * 64
IDENTITY = Identity("alice", "POL", Classification.NATO_SECRET, "POL-12BDE", frozenset({"console"}))
VERIFIER = TokenVerifier(KEY, "c2bus", "c2bus-local")


def token(**overrides: object) -> str:
    claims = jwt.decode(
        mint(KEY, IDENTITY, audience="c2bus", issuer="c2bus-local"),
        options={"verify_signature": False},
    )
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, KEY, algorithm="HS256")


def test_minted_token_round_trips() -> None:
    assert VERIFIER.verify(mint(KEY, IDENTITY, audience="c2bus", issuer="c2bus-local")) == IDENTITY


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "token expired"),
        ({"aud": "someone-else"}, "invalid token"),
        ({"iss": "evil"}, "invalid token"),
        ({"sub": None}, "invalid token"),
        ({"nation": "Poland"}, "nation"),
        ({"clearance": "TOP SECRET"}, "clearance"),
        ({"unit": ""}, "unit"),
        ({"roles": "console"}, "roles"),
    ],
)
def test_bad_claims_are_refused(claims: dict[str, object], message: str) -> None:
    with pytest.raises(AuthError, match=message):
        VERIFIER.verify(token(**claims))


def test_other_key_and_alg_none_and_rs_confusion_are_refused() -> None:
    with pytest.raises(AuthError, match="signature"):
        VERIFIER.verify(mint(b"x" * 48, IDENTITY, audience="c2bus", issuer="c2bus-local"))
    claims = jwt.decode(token(), options={"verify_signature": False})
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError):
        VERIFIER.verify(f"{header}.{body}.")
    hs512 = jwt.encode(claims, KEY, algorithm="HS512")
    with pytest.raises(AuthError, match="algorithm not allowed"):
        VERIFIER.verify(hs512)


def test_key_files(tmp_path: Path) -> None:
    created = load_or_create_key(tmp_path / "secrets" / "key")
    assert len(created) >= 32
    assert (tmp_path / "secrets" / "key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path / "secrets" / "key") == created
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        load_key(tmp_path / "short")
    with pytest.raises(ConfigError, match="cannot read the token key"):
        load_key(tmp_path / "missing")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Bearer ", None),
        ("Basic abc", None),
        ("", None),
    ],
)
def test_bearer_token_parsing(header: str, token: str | None) -> None:
    assert bearer_token(header) == token
