"""JWTAuthenticator: what it accepts, what it refuses, and what it refuses to be set up with."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from chatrelay import Credentials, Relay, RelayConfig, allow_all
from chatrelay.auth.jwt import JWTAuthenticator
from chatrelay.exceptions import Unauthorized
from jwt_support import (
    AUDIENCE,
    ISSUER,
    SECRET,
    claims,
    ec_key,
    public_pem,
    rs256,
    rsa_key,
    unsigned,
)

# Runs on asyncio and trio (tests/conftest.py): the authenticator needs no event loop.
pytestmark = pytest.mark.anyio


def rs256_authenticator(**options: Any) -> JWTAuthenticator:
    options = {"audience": AUDIENCE, "issuer": ISSUER, **options}
    return JWTAuthenticator(public_pem(rsa_key()), algorithms=["RS256"], **options)


async def authenticate(authenticator: JWTAuthenticator, token: str | None) -> Any:
    return await authenticator.authenticate(Credentials(token=token, transport="test"))


async def test_rs256_token_names_the_user() -> None:
    identity = await authenticate(rs256_authenticator(), rs256(claims("alice", name="Alice")))
    assert identity.user_id == "alice"
    assert identity.name is None  # no name_claim configured
    assert identity.claims["aud"] == AUDIENCE


async def test_hs256_token_and_custom_claims() -> None:
    authenticator = JWTAuthenticator(
        SECRET, algorithms=["HS256"], user_claim="userId", name_claim="name"
    )
    token = jwt.encode(
        {"userId": 42, "name": "Bob", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
    )
    identity = await authenticate(authenticator, f"Bearer {token}")
    assert (identity.user_id, identity.name) == ("42", "Bob")


async def test_es256_token_with_a_key_object() -> None:
    authenticator = JWTAuthenticator(ec_key().public_key(), algorithms=["ES256"])
    token = jwt.encode(claims("carol"), ec_key(), algorithm="ES256")
    # The token names an audience, and this authenticator expects none: refused.
    with pytest.raises(Unauthorized, match="audience"):
        await authenticate(authenticator, token)
    authenticator = JWTAuthenticator(
        ec_key().public_key(), algorithms=["ES256"], audience=[AUDIENCE, "admin"]
    )
    assert (await authenticate(authenticator, token)).user_id == "carol"


async def test_a_private_key_verifies_with_its_public_half() -> None:
    authenticator = JWTAuthenticator(rsa_key(), algorithms=["RS256"], audience=AUDIENCE)
    assert (await authenticate(authenticator, rs256(claims("dave")))).user_id == "dave"


async def test_leeway_tolerates_clock_skew() -> None:
    expired = rs256(claims(exp=int(time.time()) - 5))
    with pytest.raises(Unauthorized, match="expired"):
        await authenticate(rs256_authenticator(), expired)
    lenient = rs256_authenticator(leeway=timedelta(seconds=30))
    assert (await authenticate(lenient, expired)).user_id == "alice"


REFUSALS: dict[str, tuple[Any, str]] = {
    "missing": (lambda: None, "no token"),
    "empty": (lambda: "", "no token"),
    "garbage": (lambda: "not-a-jwt", "malformed"),
    "not ascii": (lambda: "é.b.c", "malformed"),
    "lone surrogate": (lambda: rs256(claims()) + "\ud800", "malformed"),
    "bad signature": (lambda: rs256(claims())[:-4] + "AAAA", "signature"),
    "expired": (lambda: rs256(claims(exp=int(time.time()) - 60)), "expired"),
    "not yet valid": (lambda: rs256(claims(nbf=int(time.time()) + 60)), "not valid yet"),
    "wrong audience": (lambda: rs256(claims(aud="billing")), "audience"),
    "wrong issuer": (lambda: rs256(claims(iss="https://evil.example")), "issuer"),
    "no expiry": (lambda: rs256({"sub": "a", "aud": AUDIENCE, "iss": ISSUER}), "'exp'"),
    "no subject": (lambda: rs256({k: v for k, v in claims().items() if k != "sub"}), "'sub'"),
    "alg none": (lambda: unsigned(claims()), "algorithm"),
    "other algorithm": (
        lambda: jwt.encode(claims(), ec_key(), algorithm="ES256"),
        "algorithm",
    ),
    # Key confusion: an HMAC token keyed with the server's *public* key, which the
    # attacker knows. A verifier that let the token pick HS256 would accept it.
    "key confusion": (
        lambda: _hmac_with_public_key(claims()),
        "algorithm",
    ),
}


def _hmac_with_public_key(payload: dict[str, Any]) -> str:
    # PyJWT refuses to sign with a PEM key as an HMAC secret; forge it by hand.
    import base64
    import hashlib
    import hmac
    import json

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(json.dumps(payload).encode())
    key = public_pem(rsa_key()).encode()
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(signature)}"


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_bad_tokens_are_refused(case: str) -> None:
    make, reason = REFUSALS[case]
    with pytest.raises(Unauthorized, match=reason) as refused:
        await authenticate(rs256_authenticator(), make())
    assert refused.value.status == 401
    assert refused.value.code == "unauthorized"


async def test_a_non_string_user_claim_is_refused() -> None:
    authenticator = JWTAuthenticator(SECRET, algorithms=["HS256"], user_claim="uid")
    for value in (True, ["alice"], ""):
        token = jwt.encode({"uid": value, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        with pytest.raises(Unauthorized, match="'uid'"):
            await authenticate(authenticator, token)


async def test_tokens_stay_out_of_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = RelayConfig(production=True)
    token = rs256(claims(aud="billing"))
    async with Relay(
        config=config, authenticator=rs256_authenticator(), authorize_join=allow_all
    ) as relay:
        with pytest.raises(Unauthorized) as refused:
            await relay.authenticate(Credentials(token=token, transport="test"))
    assert "connection refused" in caplog.text
    assert token not in caplog.text
    assert token not in str(refused.value)
    assert token not in repr(Credentials(token=token))


@pytest.mark.parametrize(
    ("key", "algorithms", "message"),
    [
        (SECRET, [], "at least one"),
        (SECRET, ["none"], "'none'"),
        (SECRET, ["HS256", "None"], "'none'"),
        (SECRET, ["HS999"], "unknown"),
        (SECRET, ["HS256", "RS256"], "mixes"),
        ("short", ["HS256"], "too weak"),
        # An HMAC algorithm with a public key: the key-confusion setup.
        (None, ["HS256"], "does not fit"),
        ("rsa-object", ["HS256"], "shared secret"),
        (None, ["ES256"], "does not fit"),
    ],
)
def test_unsafe_setups_are_refused(key: Any, algorithms: list[str], message: str) -> None:
    if key is None:
        key = public_pem(rsa_key())
    elif key == "rsa-object":
        key = rsa_key().public_key()
    with pytest.raises(ValueError, match=message):
        JWTAuthenticator(key, algorithms=algorithms)


def test_a_weak_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="too weak"):
        JWTAuthenticator(weak.public_key(), algorithms=["RS256"])


def test_repr_shows_the_setup_but_no_key() -> None:
    text = repr(JWTAuthenticator(SECRET, algorithms=["HS256"], audience="chat"))
    assert "HS256" in text
    assert "chat" in text
    assert SECRET not in text
    assert isinstance(ec_key(), ec.EllipticCurvePrivateKey)
