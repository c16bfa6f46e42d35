"""The one converter between wire payloads and `chatrelay.events`.

Wire payloads are JSON-compatible values with camelCase keys; Python objects are the
frozen attrs classes of `chatrelay.events`. The converter is strict: unknown keys,
a number where a string belongs, a naive timestamp are all refused with
`InvalidPayload`, and an unknown event name with
`UnknownEvent`. Every adapter decodes and encodes through this module,
so a payload that works in tests through `chatrelay.testing` works on the wire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._exceptions import InvalidPayload, UnknownEvent
from ._json import (
    _escape_surrogates,
    _quote,
    dumps,
    format_timestamp,
    has_lone_surrogate,
    parse_timestamp,
)
from ._public import publish
from ._types import ConversationId, MessageId, UserId
from .events import (
    AuthExpiring,
    ClientRequest,
    ErrorEvent,
    ErrorReply,
    JoinConversation,
    JoinReply,
    LeaveConversation,
    LeaveReply,
    Message,
    MessageReceived,
    MessageStatus,
    MessageStatusChanged,
    OkReply,
    Position,
    RefreshAuth,
    Reply,
    Sender,
    ServerDraining,
    ServerEvent,
    SyncRequired,
    TypingIndicator,
    TypingStart,
    TypingStop,
    UserOffline,
    UserOnline,
)

__all__ = [
    "CLIENT_EVENTS",
    "SERVER_EVENTS",
    "decode_reply",
    "decode_request",
    "decode_server_event",
    "dumps",
    "encode",
    "event_name",
    "format_timestamp",
    "has_lone_surrogate",
    "make_converter",
    "parse_timestamp",
]

T = TypeVar("T")

CLIENT_EVENTS: Final[Mapping[str, type[ClientRequest]]] = {
    "conversation:join": JoinConversation,
    "auth:refresh": RefreshAuth,
    "conversation:leave": LeaveConversation,
    "typing:start": TypingStart,
    "typing:stop": TypingStop,
}
"""The client → server event names and the class each one decodes to."""

SERVER_EVENTS: Final[Mapping[str, type[ServerEvent]]] = {
    "message:received": MessageReceived,
    "message:status": MessageStatusChanged,
    "typing:start": TypingIndicator,
    "typing:stop": TypingIndicator,
    "user:online": UserOnline,
    "user:offline": UserOffline,
    "error": ErrorEvent,
    "sync:required": SyncRequired,
    "server:draining": ServerDraining,
    "auth:expiring": AuthExpiring,
}
"""The server → client event names and the class each one decodes to."""

_CAMEL_RE = re.compile(r"_([a-z0-9])")


def _camel(name: str) -> str:
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


def _strict(kind: type[Any]) -> Callable[[object, type[Any]], Any]:
    def structure(value: object, _: type[Any]) -> Any:
        # bool is an int subclass; JSON true is never a number here.
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise ValueError(f"expected {_JSON_NAMES[kind]}, got {_json_type(value)}")
        return value

    return structure


_JSON_NAMES: Final = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _structure_literal(value: object, cls: Any) -> Any:
    allowed = get_args(cls)
    for option in allowed:
        if type(value) is type(option) and value == option:
            return value
    raise ValueError(f"expected one of {json.dumps(list(allowed))}, got {json.dumps(value)}")


def _structure_mapping(value: object, _: type[Any]) -> Mapping[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"expected an object, got {_json_type(value)}")
    return value


def _structure_status(value: object, _: type[Any]) -> MessageStatus:
    if isinstance(value, str):
        try:
            return MessageStatus(value)
        except ValueError:
            pass
    allowed = ", ".join(s.value for s in MessageStatus)
    raise ValueError(f"unknown message status {value!r} (expected one of {allowed})")


# Per-attribute overrides go in as **kwargs, which cattrs' stubs cannot type.
_make_structure_fn: Any = make_dict_structure_fn
_make_unstructure_fn: Any = make_dict_unstructure_fn


def _is_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal


def _is_mapping(tp: Any) -> bool:
    return tp is Mapping or get_origin(tp) is Mapping


def _is_list(tp: Any) -> bool:
    return tp is list or get_origin(tp) is list


def make_converter() -> cattrs.Converter:
    """Make the strict, camelCase converter that every transport uses.

    Returns:
        A new `cattrs.Converter`. chatrelay keeps one; applications can make
        their own to decode wire payloads in their tests.
    """
    conv = cattrs.Converter(forbid_extra_keys=True)
    for kind in (str, int, float, bool):
        conv.register_structure_hook(kind, _strict(kind))
    conv.register_structure_hook(datetime, lambda v, _: parse_timestamp(v))
    conv.register_unstructure_hook(datetime, format_timestamp)
    conv.register_structure_hook(MessageStatus, _structure_status)
    conv.register_unstructure_hook(MessageStatus, lambda s: s.value)
    conv.register_structure_hook_func(_is_literal, _structure_literal)
    conv.register_structure_hook_func(_is_mapping, _structure_mapping)
    conv.register_unstructure_hook_func(_is_mapping, dict)

    def list_factory(tp: Any) -> Callable[[object, Any], list[Any]]:
        # cattrs turns any iterable into a list ("abc" -> ["a", "b", "c"]); JSON wants an array.
        items: Callable[[object, Any], list[Any]] = list_structure_factory(tp, conv)

        def structure(value: object, _: Any) -> list[Any]:
            if not isinstance(value, list):
                raise ValueError(f"expected an array, got {_json_type(value)}")
            return items(value, tp)

        return structure

    conv.register_structure_hook_factory(_is_list, list_factory)

    def structure_factory(cls: type[Any]) -> Callable[[Any, type[Any]], Any]:
        overrides = {f.name: override(rename=_camel(f.name)) for f in attrs.fields(cls)}
        fn = _make_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **overrides)

        def structure(value: object, _: type[Any]) -> Any:
            if not isinstance(value, dict):
                raise ValueError(f"expected an object, got {_json_type(value)}")
            return fn(value, cls)

        return structure

    def unstructure_factory(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
        overrides = {
            f.name: override(rename=_camel(f.name), omit_if_default=f.default is None)
            for f in attrs.fields(cls)
        }
        fn: Callable[[Any], dict[str, Any]] = _make_unstructure_fn(cls, conv, **overrides)
        return fn

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)

    # A position a client sends back: a real offset and epoch, or an invalid payload.
    structure_position = conv.get_structure_hook(Position)

    def checked_position(value: object, cls: type[Position]) -> Position:
        position: Position = structure_position(value, cls)
        if position.offset < 0:
            raise ValueError(f"offset must be >= 0, got {position.offset}")
        if not position.epoch:
            raise ValueError("epoch must not be empty")
        return position

    conv.register_structure_hook(Position, checked_position)

    # A message carries the application's further fields next to the known ones.
    known = {_camel(f.name) for f in attrs.fields(Message) if f.name != "extra"}
    message_overrides = {
        f.name: override(omit=True) if f.name == "extra" else override(rename=_camel(f.name))
        for f in attrs.fields(Message)
    }
    message_unstructure = _make_unstructure_fn(
        Message,
        conv,
        **message_overrides,
    )
    message_structure = _make_structure_fn(
        Message,
        conv,
        _cattrs_forbid_extra_keys=False,
        **message_overrides,
    )

    def unstructure_message(message: Message) -> dict[str, Any]:
        clash = known.intersection(message.extra)
        if clash:
            raise ValueError(f"Message.extra repeats known fields: {sorted(clash)}")
        return {**message_unstructure(message), **message.extra}

    def structure_message(value: object, _: type[Any]) -> Message:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {_json_type(value)}")
        message: Message = message_structure(value, Message)
        extra = {k: v for k, v in value.items() if k not in known}
        return attrs.evolve(message, extra=extra) if extra else message

    conv.register_unstructure_hook(Message, unstructure_message)
    conv.register_structure_hook(Message, structure_message)
    return conv


_converter: Final = make_converter()


_PATH_RE = re.compile(r"(?<=\.)[a-z][a-z0-9_]*")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.ClassValidationError | cattrs.IterableValidationError):
        messages = cattrs.transform_error(exc, path="$", format_exception=_format_one)
        # Paths name Python attributes; clients know the camelCase wire names. Only the
        # path after the last " @ " is rewritten: the text before it may quote the client's
        # own values, which must stay as they were sent.
        return "; ".join(_wire_path(msg) for msg in messages)
    return str(exc)


def _wire_path(message: str) -> str:
    text, sep, path = message.rpartition(" @ ")
    return text + sep + _PATH_RE.sub(lambda m: _camel(m.group(0)), path)


def _format_one(exc: BaseException, _type: type[Any] | None) -> str:
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return "unknown field(s) " + ", ".join(sorted(exc.extra_fields))
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc)


def _structure(data: object, cls: type[T], event: str | None) -> T:
    try:
        return _converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise InvalidPayload(f"invalid payload: {_describe(exc)}", event=event) from None


def decode_request(event: object, data: object) -> ClientRequest:
    """Decode a client request from its event name and wire payload.

    Args:
        event: The event name, such as ``"conversation:join"``.
        data: The JSON-compatible payload.

    Returns:
        The typed request.

    Raises:
        UnknownEvent: If the protocol has no client event of that name.
        InvalidPayload: If ``data`` does not match the event's payload, or holds a
            lone UTF-16 surrogate (`has_lone_surrogate`).
    """
    if not isinstance(event, str) or event not in CLIENT_EVENTS:
        name = event if isinstance(event, str) else None
        raise UnknownEvent(f"unknown event {event!r}", event=name)
    if has_lone_surrogate(data):
        # Valid JSON, but no identifier of the protocol may hold one (see has_lone_surrogate).
        raise InvalidPayload(
            "invalid payload: a string holds an unpaired UTF-16 surrogate", event=event
        )
    return _structure(data, CLIENT_EVENTS[event], event)


def decode_server_event(event: object, data: object) -> ServerEvent:
    """Decode a server event (what clients receive) from its name and payload.

    Raises:
        UnknownEvent: If the protocol has no server event of that name.
        InvalidPayload: If ``data`` does not match the event's payload, or its
            ``isTyping`` contradicts the name (``typing:start`` / ``typing:stop``).
    """
    if not isinstance(event, str) or event not in SERVER_EVENTS:
        name = event if isinstance(event, str) else None
        raise UnknownEvent(f"unknown event {event!r}", event=name)
    decoded = _structure(data, SERVER_EVENTS[event], event)
    if isinstance(decoded, TypingIndicator) and event_name(decoded) != event:
        got = json.dumps(decoded.is_typing)
        raise InvalidPayload(
            f"invalid payload: {event} with isTyping {got} @ $.isTyping", event=event
        )
    return decoded


def decode_reply(data: object, cls: type[T]) -> T:
    """Decode an ack payload into the reply class ``cls``.

    Raises:
        InvalidPayload: If ``data`` does not match.
    """
    return _structure(data, cls, None)


def encode(value: ServerEvent | Reply | ClientRequest | Message) -> dict[str, Any]:
    """Encode an event, a reply or a message into its JSON-compatible wire payload."""
    hook = _UNSTRUCTURE_HOOKS.get(type(value))
    result: dict[str, Any] = hook(value) if hook is not None else _converter.unstructure(value)
    return result


# The converter's hook of each class of the protocol, looked up once instead of being
# dispatched on every call (what Converter.unstructure does).
_UNSTRUCTURE_HOOKS: Final[Mapping[type[Any], Callable[[Any], dict[str, Any]]]] = {
    cls: _converter.get_unstructure_hook(cls)
    for cls in (
        *SERVER_EVENTS.values(),
        *CLIENT_EVENTS.values(),
        JoinReply,
        LeaveReply,
        OkReply,
        ErrorReply,
        Message,
    )
}
_MESSAGE_FIELDS: Final = frozenset(
    _camel(f.name) for f in attrs.fields(Message) if f.name != "extra"
)


def _status_changed(
    conversation_id: ConversationId,
    message_id: MessageId,
    status: MessageStatus,
    user_id: UserId,
    updated_at: datetime,
) -> tuple[dict[str, Any], str | None]:
    """Encode a ``message:status`` without building its `MessageStatusChanged`.

    The payload is ``encode(MessageStatusChanged(...))`` and raises what it raises (a
    naive ``updated_at``); when the ids are strings, its JSON text (``dumps`` of it)
    comes along, written directly, else ``None``.
    """
    stamp = format_timestamp(updated_at)
    status_text: str = status._value_  # an attribute: neither .value's nor hash's Python code
    data = {
        "conversationId": conversation_id,
        "messageId": message_id,
        "status": status_text,
        "userId": user_id,
        "updatedAt": stamp,
    }
    if type(conversation_id) is not str or type(message_id) is not str or type(user_id) is not str:
        return data, None
    text = (
        f'{{"conversationId":{_quote(conversation_id)},"messageId":{_quote(message_id)},'
        f'"status":"{status_text}","userId":{_quote(user_id)},"updatedAt":{_quote(stamp)}}}'
    )
    if not text.isascii():
        text = _escape_surrogates(text)
    return data, text


def _message_received(message: Message, sender: Sender | None) -> dict[str, Any]:
    """Encode a ``message:received`` without building its `MessageReceived`.

    The payload is ``encode(MessageReceived(...))`` (with ``Sender(id=message.sender_id)``
    when ``sender`` is ``None``), and raises what it raises, in the same order; anything
    but plainly typed values takes that path itself.
    """
    if (
        type(message) is not Message
        or type(message.status) is not MessageStatus
        or type(message.extra) is not dict
        or not (
            sender is None
            or (
                type(sender) is Sender
                and (sender.name is None or type(sender.name) is str)
                and (sender.avatar_url is None or type(sender.avatar_url) is str)
            )
        )
    ):
        if sender is None:
            sender = Sender(id=message.sender_id)
        event = MessageReceived(
            conversation_id=message.conversation_id, message=message, sender=sender
        )
        return encode(event)
    extra = message.extra
    if extra:
        clash = _MESSAGE_FIELDS.intersection(extra)
        if clash:
            raise ValueError(f"Message.extra repeats known fields: {sorted(clash)}")
    wire: dict[str, Any] = {
        "id": message.id,
        "conversationId": message.conversation_id,
        "senderId": message.sender_id,
        "type": message.type,
        "content": dict(message.content),
        "status": message.status._value_,
        "createdAt": format_timestamp(message.created_at),
    }
    if extra:
        wire.update(extra)
    if sender is None:
        who: dict[str, Any] = {"id": message.sender_id}
    else:
        who = {"id": sender.id}
        if sender.name is not None:
            who["name"] = sender.name
        if sender.avatar_url is not None:
            who["avatarUrl"] = sender.avatar_url
    return {"conversationId": message.conversation_id, "message": wire, "sender": who}


def event_name(event: ServerEvent) -> str:
    """Return the wire name of a server event (``typing:start`` or ``typing:stop`` for typing)."""
    if isinstance(event, TypingIndicator):
        return "typing:start" if event.is_typing else "typing:stop"
    return _SERVER_NAMES[type(event)]


_SERVER_NAMES: Final[Mapping[type[Any], str]] = {
    cls: name for name, cls in SERVER_EVENTS.items() if cls is not TypingIndicator
}


publish(__name__, ["dumps", "format_timestamp", "has_lone_surrogate", "parse_timestamp"])
