"""Token verification refuses every token it should; minted tokens round-trip."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from c2bus.adapters.auth import (
    LOCAL_ISSUER,
    SIMULATOR,
    RevocationList,
    TokenVerifier,
    bearer_token,
    load_jwks,
    load_key,
    local_minter,
    mint,
    verifier_for,
)
from c2bus.adapters.settings import AuthSettings
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.errors import AuthError, ConfigError

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
    with pytest.raises(AuthError, match="algorithm 'HS512' not allowed"):
        VERIFIER.verify(hs512)


def test_key_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(KEY + b"\n")
    assert load_key(tmp_path / "key") == KEY
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


# --- EdDSA and RS256 keys from a JWKS file ------------------------------------------------

ED_KEY = ed25519.Ed25519PrivateKey.generate()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(public_key: object, kid: str, alg: str) -> dict[str, object]:
    algorithm = OKPAlgorithm if alg == "EdDSA" else RSAAlgorithm
    return {**json.loads(algorithm.to_jwk(public_key)), "kid": kid, "alg": alg}


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    keys = [jwk(ED_KEY.public_key(), "ed-1", "EdDSA"), jwk(RSA_KEY.public_key(), "rsa-1", "RS256")]
    path.write_text(json.dumps({"keys": keys}))
    return path


@pytest.fixture
def verifier(jwks_file: Path) -> TokenVerifier:
    return TokenVerifier(None, "c2bus", "c2bus-local", public_keys=load_jwks(jwks_file))


def signed(key: object, alg: str, kid: str | None, **claims: object) -> str:
    token = mint(key, IDENTITY, audience="c2bus", issuer="c2bus-local", algorithm=alg, kid=kid)
    if not claims:
        return token
    body = {**jwt.decode(token, options={"verify_signature": False}), **claims}
    body = {k: v for k, v in body.items() if v is not None}  # None: leave the claim out
    headers = {"kid": kid} if kid else None
    return jwt.encode(body, key, algorithm=alg, headers=headers)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_eddsa_rs256_and_hs256_tokens_verify(verifier: TokenVerifier) -> None:
    assert verifier.verify(signed(ED_KEY, "EdDSA", "ed-1")) == IDENTITY
    assert verifier.verify(signed(RSA_KEY, "RS256", "rsa-1")) == IDENTITY
    assert VERIFIER.verify(signed(KEY, "HS256", None)) == IDENTITY  # its own opt-in verifier


def test_hs256_is_never_accepted_beside_a_jwks(jwks_file: Path, tmp_path: Path) -> None:
    """A shared key lets every holder mint any identity: only by explicit opt-in, and never
    where public keys verify tokens."""
    with pytest.raises(ConfigError, match="never beside a JWKS"):
        TokenVerifier(KEY, "c2bus", "c2bus-local", public_keys=load_jwks(jwks_file))
    key_file = tmp_path / "hs256.key"
    key_file.write_bytes(KEY)
    both = {"C2BUS_JWT_HS256_KEY_FILE": str(key_file), "C2BUS_JWT_JWKS_FILE": str(jwks_file)}
    with pytest.raises(ConfigError, match="never beside a JWKS"):
        AuthSettings.from_env(both)
    with pytest.raises(ConfigError, match="C2BUS_JWT_HS256_KEY_FILE"):
        AuthSettings.from_env({"C2BUS_JWT_KEY_FILE": str(key_file)})  # the old, implicit name
    opted_in = verifier_for(AuthSettings.from_env({"C2BUS_JWT_HS256_KEY_FILE": str(key_file)}))
    assert opted_in.verify(signed(KEY, "HS256", None)) == IDENTITY
    with pytest.raises(AuthError, match="unknown key"):
        opted_in.verify(signed(ED_KEY, "EdDSA", "ed-1"))


def test_local_tokens_are_eddsa_and_verifiers_hold_public_keys_only(tmp_path: Path) -> None:
    auth = AuthSettings.from_env({"C2BUS_JWT_DIR": str(tmp_path / "tokens")})
    assert auth.local
    verifier = verifier_for(auth)  # makes the local keys on first use
    with pytest.raises(AuthError, match="HS256 tokens are not accepted"):
        verifier.verify(signed(KEY, "HS256", None))
    for name in (LOCAL_ISSUER, SIMULATOR):  # the simulator mints with a key of its own
        minted = local_minter(auth, name)(IDENTITY, 600)
        assert jwt.get_unverified_header(minted)["alg"] == "EdDSA"
        assert jwt.get_unverified_header(minted)["kid"].startswith(name + "-")
        assert verifier.verify(minted) == IDENTITY
        assert (tmp_path / "tokens" / f"{name}.key").stat().st_mode & 0o777 == 0o600
    public = json.loads((tmp_path / "tokens" / "jwks.json").read_text())
    assert len(public["keys"]) == 2 and not any("d" in k for k in public["keys"])
    external = AuthSettings.from_env(
        {"C2BUS_JWT_JWKS_FILE": str(tmp_path / "tokens" / "jwks.json")}
    )
    with pytest.raises(ConfigError, match="identity provider"):
        local_minter(external, LOCAL_ISSUER)


def test_tokens_live_no_longer_than_allowed_and_carry_an_id_when_revocation_is_on(
    jwks_file: Path, tmp_path: Path
) -> None:
    verifier = TokenVerifier(
        None, "c2bus", "c2bus-local", public_keys=load_jwks(jwks_file), max_ttl_s=3600
    )
    assert verifier.verify(signed(ED_KEY, "EdDSA", "ed-1", exp=int(time.time()) + 3000))
    with pytest.raises(AuthError, match="lifetime"):
        verifier.verify(signed(ED_KEY, "EdDSA", "ed-1", exp=int(time.time()) + 7200))
    with pytest.raises(AuthError, match="iat"):
        verifier.verify(signed(ED_KEY, "EdDSA", "ed-1", iat=None))
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    checked = TokenVerifier(
        None,
        "c2bus",
        "c2bus-local",
        public_keys=load_jwks(jwks_file),
        revocations=RevocationList(revoked),
    )
    assert checked.verify(signed(ED_KEY, "EdDSA", "ed-1"))
    with pytest.raises(AuthError, match="jti"):
        checked.verify(signed(ED_KEY, "EdDSA", "ed-1", jti=None))


def test_every_forged_or_stale_token_is_refused(verifier: TokenVerifier) -> None:
    good = signed(ED_KEY, "EdDSA", "ed-1")
    header, body, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    tampered = b64(json.dumps({**claims, "clearance": "COSMIC TOP SECRET"}).encode())
    rsa_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused_head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    confused_mac = hmac.new(rsa_pem, f"{confused_head}.{body}".encode(), hashlib.sha256)
    unsigned_head = b64(json.dumps({"alg": "none"}).encode())
    cases = {
        "unsigned (alg none)": (f"{unsigned_head}.{body}.", "not allowed"),
        "tampered claims": (f"{header}.{tampered}.{signature}", "signature"),
        "HS256 signed with the RSA public key": (
            f"{confused_head}.{body}.{b64(confused_mac.digest())}",
            "HS256 tokens are not accepted",  # where public keys verify, no HS256 at all
        ),
        "RS256 header on the Ed25519 key": (
            signed(RSA_KEY, "RS256", "ed-1"),
            "verifies EdDSA tokens, not RS256",
        ),
        "unknown kid": (signed(ED_KEY, "EdDSA", "ed-2"), "unknown key"),
        "no kid": (signed(ED_KEY, "EdDSA", None), "unknown key"),
        "another Ed25519 key under a known kid": (
            signed(ed25519.Ed25519PrivateKey.generate(), "EdDSA", "ed-1"),
            "signature",
        ),
        "expired": (signed(ED_KEY, "EdDSA", "ed-1", exp=int(time.time()) - 3600), "expired"),
        "not yet valid": (
            signed(RSA_KEY, "RS256", "rsa-1", nbf=int(time.time()) + 3600),
            "invalid token",
        ),
        "wrong audience": (signed(ED_KEY, "EdDSA", "ed-1", aud="elsewhere"), "invalid token"),
        "ES256": (signed(ec.generate_private_key(ec.SECP256R1()), "ES256", "ed-1"), "not allowed"),
        "garbage": ("not.a.token", "malformed"),
    }
    for name, (token, message) in cases.items():
        with pytest.raises(AuthError, match=message):
            verifier.verify(token)
            pytest.fail(f"accepted: {name}")


def test_hs256_is_refused_when_no_shared_key_is_configured(jwks_file: Path) -> None:
    only_public = TokenVerifier(None, "c2bus", "c2bus-local", public_keys=load_jwks(jwks_file))
    with pytest.raises(AuthError, match="HS256 tokens are not accepted"):
        only_public.verify(signed(KEY, "HS256", None))
    assert only_public.verify(signed(ED_KEY, "EdDSA", "ed-1")) == IDENTITY


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([{**jwk(ED_KEY.public_key(), "ed-1", "EdDSA"), "d": "secret"}], "private key"),
        ([{**jwk(ED_KEY.public_key(), "ed-1", "EdDSA"), "alg": "RS256"}], "needs kty RSA"),
        ([{**jwk(ED_KEY.public_key(), "ed-1", "EdDSA"), "alg": "HS256"}], "'alg' must be"),
        ([{**jwk(ED_KEY.public_key(), "", "EdDSA")}], "no 'kid'"),
        ([jwk(ED_KEY.public_key(), "a", "EdDSA"), jwk(ED_KEY.public_key(), "a", "EdDSA")], "twice"),
        (
            [{"kid": "x", "alg": "EdDSA", "kty": "OKP", "crv": "Ed25519", "x": "!!"}],
            "not a usable key",
        ),
    ],
)
def test_bad_jwks_files_are_refused_with_the_reason(
    tmp_path: Path, keys: list[object], message: str
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    with pytest.raises(ConfigError, match=message):
        load_jwks(path)


def test_jwks_file_is_configured_by_environment(jwks_file: Path) -> None:
    auth = AuthSettings.from_env({"C2BUS_JWT_JWKS_FILE": str(jwks_file)})
    assert auth.jwks_file == jwks_file.resolve() and not auth.local
    assert AuthSettings.from_env({}).local  # by default: local EdDSA keys


# --- the revocation list --------------------------------------------------------------------


def test_revoked_tokens_and_subjects_are_refused_and_the_list_reloads(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("# nobody yet\n")
    revocations = RevocationList(path, min_interval_s=0)
    verifier = TokenVerifier(KEY, "c2bus", "c2bus-local", revocations=revocations)
    first = mint(KEY, IDENTITY, audience="c2bus", issuer="c2bus-local")
    second = mint(KEY, IDENTITY, audience="c2bus", issuer="c2bus-local")
    assert verifier.verify(first) == IDENTITY
    jti = jwt.decode(first, options={"verify_signature": False})["jti"]
    generation = revocations.generation

    path.write_text(f"jti:{jti}  # leaked\n")
    os.utime(path, (time.time() + 1, time.time() + 1))  # a new mtime even within a second
    with pytest.raises(AuthError, match="token revoked"):
        verifier.verify(first)
    assert verifier.verify(second) == IDENTITY  # only that token
    assert revocations.generation > generation

    path.write_text(f"sub:{IDENTITY.subject}\n")
    os.utime(path, (time.time() + 2, time.time() + 2))
    with pytest.raises(AuthError, match="subject revoked"):
        verifier.verify(second)


def test_an_unreadable_or_malformed_revocation_list_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    with pytest.raises(ConfigError, match="cannot read the revocation list"):
        RevocationList(path)
    path.write_text("")
    revocations = RevocationList(path, min_interval_s=0)
    verifier = TokenVerifier(KEY, "c2bus", "c2bus-local", revocations=revocations)
    token = mint(KEY, IDENTITY, audience="c2bus", issuer="c2bus-local")
    assert verifier.verify(token) == IDENTITY
    path.unlink()
    with pytest.raises(AuthError, match="revocation list unavailable"):
        verifier.verify(token)
    path.write_text("alice\n")  # neither jti: nor sub:
    with pytest.raises(AuthError, match="revocation list unavailable"):
        verifier.verify(token)
    assert revocations.error is not None and "expected 'jti:<id>' or 'sub:<subject>'" in (
        revocations.error
    )
    path.write_text("sub:someone-else\n")
    assert verifier.verify(token) == IDENTITY
