"""The wire's text below the converter: JSON (`dumps`), lone surrogates, timestamps.

`chatrelay.codec` exports each public name (`chatrelay.codec.dumps`,
`chatrelay.codec.format_timestamp`…); the codec's fast paths write their JSON with
`_quote` and `_escape_surrogates` from here, as `dumps` does.
"""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["dumps", "format_timestamp", "has_lone_surrogate", "parse_timestamp"]

_quote: Final[Callable[[str], str]] = json.encoder.encode_basestring  # what dumps uses for str


def dumps(value: object) -> str:
    r"""Serialize a JSON-compatible value compactly, refusing NaN and infinities.

    Characters other than ASCII are written as they are (the text is sent as UTF-8),
    except lone UTF-16 surrogates (``"\ud800"``, which JSON allows and UTF-8 cannot
    encode): those are written as ``\uXXXX`` escapes, so the text is always valid
    UTF-8 once encoded, and decodes to the same string on every client.
    """
    if type(value) is str:
        text = _quote(value)  # what the encoder does with a string, minus its set-up
    elif _make_encoder is None:
        text = _ENCODER.encode(value)
    else:
        # What _ENCODER.encode does, without its Python layers: the C encoder, with
        # fresh markers (circular references) for each value.
        text = "".join(
            _make_encoder({}, _default, _quote, None, ":", ",", False, False, False)(value, 0)
        )
    # isascii() is a flag lookup: ASCII text (the usual case) costs nothing more.
    return text if text.isascii() else _escape_surrogates(text)


# Lone surrogates can only be inside the JSON strings of the text (everything else the
# encoder writes is ASCII), where a \uXXXX escape stands for the same code unit.
_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _escape_surrogates(text: str) -> str:
    r"""``text`` with each lone surrogate replaced by its ``\uXXXX`` escape."""
    if _SURROGATE_RE.search(text) is None:
        return text
    return _SURROGATE_RE.sub(_escape_surrogate, text)


def has_lone_surrogate(value: object) -> bool:
    r"""Tell whether a JSON-compatible value holds a lone UTF-16 surrogate in a string.

    Such strings are valid JSON (``"\ud800"``) but not valid Unicode text: they
    cannot be encoded as UTF-8, used as keys of most stores, or compared with what
    other systems hold. The protocol refuses them where they would be identifiers
    (client requests); message content may hold them (`dumps` escapes them).
    """
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE_RE.search(value) is not None
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_lone_surrogate(item) for item in value)
    return False


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_default: Final = _ENCODER.default
_make_encoder: Callable[..., Callable[[object, int], Any]] | None = getattr(
    json.encoder, "c_make_encoder", None
)


def _check_make_encoder() -> None:
    """Fall back to `_ENCODER` if this Python's C encoder is missing or called otherwise."""
    global _make_encoder  # decided once, at import
    sample = {"a": [1, 2.5, None, True, 'é\u2028"'], "b": {}}
    try:
        if dumps(sample) == _ENCODER.encode(sample):
            return
    except Exception:  # any failure means: do not use it
        pass
    _make_encoder = None


_check_make_encoder()


def format_timestamp(value: datetime) -> str:
    """Format an aware datetime as an ISO 8601 UTC string ending in ``Z``.

    Milliseconds are written as three digits (as JavaScript's ``toISOString()`` does)
    unless the value has finer precision, which is then kept.

    Raises:
        ValueError: If ``value`` is naive.
    """
    if value.tzinfo is UTC and type(value) is datetime:
        # Already in UTC (datetime.now(UTC), fromtimestamp(..., UTC)): the same text,
        # without making two more datetimes. isoformat writes the offset as "+00:00".
        spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
        return value.isoformat("T", spec)[:-6] + "Z"
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    value = value.astimezone(UTC)
    timespec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def parse_timestamp(value: object) -> datetime:
    """Parse an ISO 8601 timestamp with an offset (or ``Z``) into an aware UTC datetime.

    Raises:
        ValueError: If ``value`` is not such a string.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp has no UTC offset: {value!r}")
    return parsed.astimezone(UTC)
