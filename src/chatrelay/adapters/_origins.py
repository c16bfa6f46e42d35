"""Which web origins may connect: one policy for every transport.

Browsers send ``Origin`` with every WebSocket handshake but, unlike ``fetch``, do not
enforce any CORS answer: a page on any site can open a socket to the server, with the
user's cookies. The server has to refuse foreign origins itself, before it accepts.
`origin_policy` makes the policy every adapter uses from its ``allowed_origins``, with
the same default and the same production rule: the WebSocket adapter asks it before
accepting, the Socket.IO adapter hands its `OriginPolicy.allows` to python-socketio,
which then does the CORS mechanics (and its refusal) as it does for a list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "origin_policy"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
ANY: Final = "*"
NULL: Final = "null"


def normalize_origin(origin: str) -> str | None:
    """Return ``scheme://host[:port]`` in canonical form, or ``None`` if not an origin.

    Scheme and host are lower-cased and a default port is dropped, as browsers write
    origins; anything beyond the origin (a path, a query, credentials) makes it
    invalid.
    """
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in ("http", "https")
        or not host
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
        or origin.endswith(("?", "#"))
    ):
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """Decides from a handshake's ``Origin`` header whether to accept it.

    Args:
        allowed: Exact origins (``"https://chat.example.com"``,
            ``"http://localhost:5173"``); ``"*"`` for any ``http``/``https`` origin;
            ``"null"`` to admit the opaque origin of sandboxed frames and ``file:``
            pages (never admitted otherwise, not even by ``"*"``). ``None`` is
            ``["*"]``.
        allow_missing: Whether a handshake without ``Origin`` is accepted. Browsers
            always send it, so only non-browser clients (mobile apps, CLI tools,
            servers) omit it.

    Raises:
        TypeError: If ``allowed`` is a single string rather than a collection.
        ValueError: If an entry of ``allowed`` is not an origin (a trailing slash or
            a path, say), so a typo cannot silently lock everyone out.
    """

    def __init__(self, allowed: Iterable[str] | None, *, allow_missing: bool = True) -> None:
        if isinstance(allowed, str):
            raise TypeError(f"allowed origins must be a collection of strings, not {allowed!r}")
        self.allow_missing = allow_missing
        self.allow_any_web = False
        self.allow_null = False
        self.origins: set[str] = set()
        for entry in (ANY,) if allowed is None else allowed:
            if entry == ANY:
                self.allow_any_web = True
            elif entry == NULL:
                self.allow_null = True
            else:
                normalized = normalize_origin(entry)
                if normalized is None:
                    raise ValueError(
                        f"{entry!r} is not an origin; write scheme://host[:port], as in"
                        " 'https://chat.example.com' (no path, no trailing slash)"
                    )
                self.origins.add(normalized)

    def allows(self, origin: str | None) -> bool:
        """Tell whether a handshake with this ``Origin`` header may proceed.

        Args:
            origin: The header's value, or ``None`` when the handshake had none.
        """
        if origin is None:
            return self.allow_missing
        if origin == NULL:
            return self.allow_null
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        return self.allow_any_web or normalized in self.origins


def origin_policy(
    allowed: Iterable[str] | None, *, production: bool, allow_missing: bool = True
) -> OriginPolicy:
    """The origin policy of an adapter, from its ``allowed_origins`` argument.

    Outside production mode, ``None`` admits any ``http``/``https`` origin (``["*"]``);
    production mode has no default: the application says which sites may connect.

    Args:
        allowed: The adapter's ``allowed_origins`` (see `OriginPolicy`).
        production: Whether the relay runs in production mode.
        allow_missing: Whether a handshake without ``Origin`` is accepted.

    Raises:
        ValueError: If production mode lacks ``allowed``, or an entry is not an origin.
        TypeError: If ``allowed`` is a single string.
    """
    if allowed is None and production:
        raise ValueError(
            "production mode needs allowed_origins (the web origins whose pages may"
            ' connect); pass ["*"] explicitly to let every site connect'
        )
    return OriginPolicy(allowed, allow_missing=allow_missing)
