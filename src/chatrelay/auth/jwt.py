"""Authenticate clients with JSON Web Tokens (the ``jwt`` extra, built on PyJWT).

::

    from chatrelay import Relay, RelayConfig
    from chatrelay.auth.jwt import JWTAuthenticator

    authenticator = JWTAuthenticator(
        public_key_pem, algorithms=["RS256"], audience="chat", issuer="https://auth.example"
    )
    relay = Relay(config=RelayConfig(production=True), authenticator=authenticator, ...)

The token is what the adapter put in `chatrelay.Credentials.token` (Socket.IO
``auth.token``; on the WebSocket binding an ``Authorization: Bearer`` header, a
``?token=`` parameter or a first ``auth`` frame), so one authenticator serves every
transport.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt
from jwt.algorithms import HMACAlgorithm

from .._auth import Authenticator, Credentials, Identity
from .._exceptions import Unauthorized

__all__ = ["JWTAuthenticator"]

# Fixed sentences, so no part of a token can reach a client or a log line through an
# exception's text. Most specific first: several of these subclass one another.
_REFUSALS: Final[tuple[tuple[type[jwt.InvalidTokenError], str], ...]] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.InvalidSignatureError, "the token's signature is invalid"),
    (jwt.DecodeError, "the token is malformed"),
)


class JWTAuthenticator(Authenticator):
    """Verifies a JSON Web Token and takes the user from one of its claims.

    The allowed algorithms are pinned: a token is checked with ``key`` and one of
    ``algorithms`` only, whatever its header says. ``none`` is never accepted, and
    an HMAC algorithm (``HS256``…) is refused with a public key, so a token signed
    with the public key as an HMAC secret (key confusion) cannot pass.

    Args:
        key: For ``HS*``, the shared secret (``str`` or ``bytes``, at least as long
            as the hash: 32 bytes for ``HS256``). For ``RS*``, ``PS*``, ``ES*`` and
            ``EdDSA``, the public key, as PEM text or a ``cryptography`` key object
            (a private key works too: only its public half is used).
        algorithms: The algorithms to accept, all of one family (``["HS256"]``,
            ``["RS256"]``, ``["ES256"]``…).
        audience: The ``aud`` the token must have (one of them, if several are
            given). Without it, a token that has an ``aud`` is refused.
        issuer: The ``iss`` the token must have (one of them, if several).
        leeway: Clock skew tolerated on ``exp`` and ``nbf``, in seconds.
        user_claim: The claim that names the user (default ``sub``); a string, or
            an integer, which becomes its decimal string.
        name_claim: A claim with the user's display name, if the tokens carry one.
        require: Claims every token must have besides ``user_claim`` (default
            ``exp``: tokens without an expiry are refused). ``exp`` and ``nbf``
            are checked whenever present.

    Raises:
        ValueError: If ``algorithms`` is empty, names ``none`` or an unknown
            algorithm, mixes HMAC with public-key algorithms, or if ``key`` does not
            fit them (a public key for HMAC, a short secret, an RSA key for ``ES256``).
    """

    def __init__(
        self,
        key: Any,
        *,
        algorithms: Iterable[str],
        audience: str | Collection[str] | None = None,
        issuer: str | Collection[str] | None = None,
        leeway: float | timedelta = 0,
        user_claim: str = "sub",
        name_claim: str | None = None,
        require: Collection[str] = ("exp",),
    ) -> None:
        self.algorithms: tuple[str, ...] = tuple(algorithms)
        self.audience = audience if isinstance(audience, str | None) else list(audience)
        self.issuer = issuer if isinstance(issuer, str | None) else list(issuer)
        self.leeway = leeway
        self.user_claim = user_claim
        self.name_claim = name_claim
        self.require = [*dict.fromkeys([*require, user_claim])]
        self._key = _prepare_key(key, self.algorithms)

    async def authenticate(self, credentials: Credentials) -> Identity:
        """Verify the client's token.

        Args:
            credentials: What the client presented; only ``token`` is read. A
                leading ``Bearer`` is ignored.

        Returns:
            The user named by ``user_claim``, with ``name_claim`` as the name and
            every claim of the token in ``claims``.

        Raises:
            Unauthorized: If there is no token, or it is malformed, expired, not
                yet valid, signed with another key or algorithm, for another
                audience or issuer, or lacks a required claim.
        """
        token = credentials.token
        if token is not None and token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            raise Unauthorized("no token was presented")
        if not token.isascii():
            # A JWT is base64url and dots; PyJWT would fail to encode a lone surrogate
            # (valid in a JSON string) with an error of its own, not a refusal.
            raise Unauthorized("the token is malformed")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": self.require, "enforce_minimum_key_length": True},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(_refusal(exc)) from None
        exp = claims.get("exp")
        return Identity(
            user_id=self._user_id(claims),
            name=self._name(claims),
            claims=claims,
            expires_at=None if exp is None else datetime.fromtimestamp(exp, UTC),
        )

    def _user_id(self, claims: Mapping[str, Any]) -> str:
        value = claims[self.user_claim]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise Unauthorized(f"the token's {self.user_claim!r} claim is not a user id")
        return value

    def _name(self, claims: Mapping[str, Any]) -> str | None:
        if self.name_claim is None:
            return None
        value = claims.get(self.name_claim)
        return value if isinstance(value, str) and value else None

    def __repr__(self) -> str:
        return (
            f"JWTAuthenticator(algorithms={list(self.algorithms)!r},"
            f" audience={self.audience!r}, issuer={self.issuer!r})"
        )


def _refusal(exc: jwt.PyJWTError) -> str:
    for kind, sentence in _REFUSALS:
        if isinstance(exc, kind):
            return sentence
    return "the token is invalid"


def _prepare_key(key: Any, algorithms: tuple[str, ...]) -> Any:
    """Check that ``key`` fits every algorithm, and return it ready for verifying.

    PyJWT would refuse most mismatches at the first token; checking here turns a
    misconfiguration into an error at startup rather than refused users.
    """
    if not algorithms:
        raise ValueError("algorithms must name at least one algorithm, such as 'RS256'")
    if any(alg.lower() == "none" for alg in algorithms):
        raise ValueError("the 'none' algorithm is never accepted: tokens must be signed")
    resolved = {}
    for alg in algorithms:
        try:
            resolved[alg] = jwt.get_algorithm_by_name(alg)
        except NotImplementedError:
            raise ValueError(f"unknown JWT algorithm {alg!r}") from None
    hmac = {alg for alg, obj in resolved.items() if isinstance(obj, HMACAlgorithm)}
    if hmac and len(hmac) != len(resolved):
        raise ValueError(
            "algorithms mixes HMAC with public-key algorithms; a key cannot serve both"
            f" safely: {list(algorithms)!r}"
        )
    if hmac and not isinstance(key, str | bytes):
        raise ValueError("HMAC algorithms take a shared secret (str or bytes), not a key object")
    prepared: Any = None
    for alg, obj in resolved.items():
        try:
            prepared = obj.prepare_key(key)
        except (jwt.InvalidKeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the key does not fit {alg}: {exc}") from None
        problem = obj.check_key_length(prepared)
        if problem is not None:
            raise ValueError(f"the key is too weak for {alg}: {problem}")
    # Verifying needs only the public half; PyJWT cannot verify with a private key.
    public_key = getattr(prepared, "public_key", None)
    return public_key() if callable(public_key) else prepared
