"""The demo's REST API (JSON, camelCase), over `DemoService`."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.routing import Route

from .. import codec
from ..events import Message
from ._models import Conversation, DemoError
from ._service import DemoService
from ._store import StoreUnavailable

__all__ = ["rest_routes"]


class JSONResponse(_StarletteJSON):
    """Starlette's JSON response, written by `codec.dumps`.

    Starlette's own writes lone UTF-16 surrogates raw and fails to encode them (a 500
    for a message that was stored and sent); a message may hold one, so the API
    writes what the transports write: a JSON escape.
    """

    def render(self, content: Any) -> bytes:
        return codec.dumps(content).encode()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "code": code, "message": message}, status_code=status)


def _conversation(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "participantIds": list(conversation.participant_ids),
        "name": conversation.name,
    }


def _message(message: Message) -> dict[str, Any]:
    return codec.encode(message)


async def _body(request: Request, fields: dict[str, type]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise DemoError(400, "invalid_payload", "the body must be JSON") from None
    if not isinstance(body, dict):
        raise DemoError(400, "invalid_payload", "the body must be a JSON object")
    unknown = set(body) - set(fields)
    if unknown:
        raise DemoError(400, "invalid_payload", f"unknown field(s): {', '.join(sorted(unknown))}")
    for name, kind in fields.items():
        if name in body and not isinstance(body[name], kind):
            raise DemoError(400, "invalid_payload", f"{name} must be a {kind.__name__}")
    return body


def _required(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise DemoError(400, "invalid_payload", f"{name} is required")
    return body[name]


def rest_routes(service: DemoService) -> list[Route]:
    """The REST routes of the demo, bound to ``service``."""

    async def create_conversation(request: Request) -> JSONResponse:
        body = await _body(request, {"participantIds": list, "name": str})
        participants = _required(body, "participantIds")
        if not all(isinstance(p, str) for p in participants):
            raise DemoError(400, "invalid_payload", "participantIds must be strings")
        conversation = await service.create_conversation(participants, body.get("name"))
        return JSONResponse(_conversation(conversation), status_code=201)

    async def list_conversations(request: Request) -> JSONResponse:
        user_id = request.query_params.get("userId")
        if not user_id:
            raise DemoError(400, "invalid_payload", "the userId query parameter is required")
        conversations = await service.conversations_of(user_id)
        return JSONResponse([_conversation(c) for c in conversations])

    async def post_message(request: Request) -> JSONResponse:
        body = await _body(request, {"senderId": str, "type": str, "content": dict})
        if body.get("type", "text") != "text":
            raise DemoError(400, "invalid_payload", "only text messages are supported")
        content = _required(body, "content")
        if set(content) != {"text"} or not isinstance(content["text"], str):
            raise DemoError(400, "invalid_payload", 'content must be {"text": "..."}')
        message = await service.send_message(
            request.path_params["id"], _required(body, "senderId"), content["text"]
        )
        return JSONResponse(_message(message), status_code=201)

    async def list_messages(request: Request) -> JSONResponse:
        messages = await service.messages_of(request.path_params["id"])
        return JSONResponse([_message(m) for m in messages])

    async def patch_status(request: Request) -> JSONResponse:
        body = await _body(request, {"status": str, "userId": str})
        message = await service.update_status(
            request.path_params["id"], _required(body, "status"), _required(body, "userId")
        )
        return JSONResponse(_message(message))

    async def mark_read(request: Request) -> JSONResponse:
        body = await _body(request, {"userId": str})
        updated = await service.mark_read(request.path_params["id"], _required(body, "userId"))
        return JSONResponse({"updated": [m.id for m in updated]})

    async def online_users(request: Request) -> JSONResponse:
        return JSONResponse({"userIds": sorted(service.relay.online_users())})

    async def users(request: Request) -> JSONResponse:
        return JSONResponse([{"id": u.id, "name": u.name} for u in service.users.values()])

    def guarded(endpoint: Any) -> Any:
        async def run(request: Request) -> JSONResponse:
            try:
                response: JSONResponse = await endpoint(request)
            except DemoError as exc:
                return _error(exc.status, exc.code, exc.message)
            except StoreUnavailable as exc:
                return _error(503, "unavailable", str(exc))
            return response

        return run

    return [
        Route("/api/conversations", guarded(create_conversation), methods=["POST"]),
        Route("/api/conversations", guarded(list_conversations), methods=["GET"]),
        Route("/api/conversations/{id}/messages", guarded(post_message), methods=["POST"]),
        Route("/api/conversations/{id}/messages", guarded(list_messages), methods=["GET"]),
        Route("/api/conversations/{id}/read", guarded(mark_read), methods=["POST"]),
        Route("/api/messages/{id}/status", guarded(patch_status), methods=["PATCH"]),
        Route("/api/users/online", guarded(online_users), methods=["GET"]),
        Route("/api/users", guarded(users), methods=["GET"]),
    ]
