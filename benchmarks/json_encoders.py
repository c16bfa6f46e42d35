"""chatrelay's JSON encoder (`chatrelay.codec.dumps`) against orjson, on the wire's payloads.

A broadcast is encoded once, whatever its number of recipients, so this is a fixed
cost per broadcast. The script also shows where orjson's output or behaviour differs
from what the wire protocol asks of chatrelay's encoder (NaN refused, lone surrogates
written as escapes, one text for one value):

    .venv/bin/pip install orjson
    .venv/bin/python benchmarks/json_encoders.py

orjson is not a dependency of chatrelay; the script says so and exits if it is absent.
"""

from __future__ import annotations

import sys
import timeit
from datetime import UTC, datetime
from typing import Any

from chatrelay import Message, MessageStatus, codec

try:
    import orjson
except ImportError:  # pragma: no cover - a measurement, not a feature
    sys.exit("orjson is not installed: pip install orjson")

COUNT = 200_000


def payloads() -> list[tuple[str, Any]]:
    message = Message(
        id="m123",
        conversation_id="c1",
        sender_id="alice",
        type="text",
        content={"text": "Hello Bob, how are you doing today? \N{WAVING HAND SIGN}"},
        status=MessageStatus.SENT,
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    # The message as the payload of message:received carries it.
    received = {"conversationId": "c1", "message": codec.encode(message), "sender": {"id": "alice"}}
    status = {
        "conversationId": "c1",
        "messageId": "m123",
        "status": "read",
        "userId": "bob",
        "updatedAt": "2026-01-02T03:04:05.000Z",
    }
    return [("message:received", received), ("message:status", status)]


def microseconds(function: Any) -> float:
    return min(timeit.repeat(function, number=COUNT, repeat=5)) / COUNT * 1e6


def main() -> None:
    for name, value in payloads():
        ours = microseconds(lambda value=value: codec.dumps(value))
        theirs = microseconds(lambda value=value: orjson.dumps(value).decode())
        same = codec.dumps(value) == orjson.dumps(value).decode()
        print(
            f"{name:18s} codec.dumps {ours:5.2f} µs   orjson (to str) {theirs:5.2f} µs"
            f"   same text: {same}"
        )
    print("differences that matter to the wire:")
    for label, value in [
        ("NaN", float("nan")),
        ("a lone surrogate", "\ud800"),
        ("1e-7", 1e-7),
    ]:
        try:
            ours_text = codec.dumps(value)
        except ValueError as exc:
            ours_text = f"refused ({exc})"
        try:
            theirs_text = orjson.dumps(value).decode()
        except TypeError as exc:
            theirs_text = f"refused ({exc})"
        print(f"  {label:18s} codec.dumps: {ours_text:40.40s} orjson: {theirs_text}")


if __name__ == "__main__":
    main()
