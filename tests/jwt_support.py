"""Keys and tokens for the tests of JWT authentication."""

from __future__ import annotations

import base64
import json
import time
from functools import cache
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET: Final = "a-shared-secret-of-at-least-32-bytes!"
AUDIENCE: Final = "chat"
ISSUER: Final = "https://auth.example"


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA key for the whole run (making one takes a while)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    """One P-256 key for the whole run."""
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """The public half of a key as PEM text, as a server is configured with it."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(sub: str = "alice", **extra: Any) -> dict[str, Any]:
    """Valid claims for the test audience and issuer, expiring in a minute."""
    now = int(time.time())
    return {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 60, **extra}


def rs256(payload: dict[str, Any]) -> str:
    """A token signed with the test RSA key."""
    return jwt.encode(payload, rsa_key(), algorithm="RS256")


def unsigned(payload: dict[str, Any]) -> str:
    """A token with ``alg: none`` and no signature, as an attacker forges one."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."
