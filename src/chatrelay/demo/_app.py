"""The demo's ASGI application: REST, the web page, and both transports on one port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from .._auth import Authenticator
from .._backplane import Backplane
from .._config import RelayConfig
from .._relay import Relay
from ..adapters.socketio import SocketIOAdapter
from ..adapters.starlette import WebSocketAdapter
from ..metrics import instrument
from ._rest import rest_routes
from ._service import DemoService
from ._store import DemoStore

__all__ = ["DemoApp", "create_app"]

_STATIC = __file__.rsplit("/", 1)[0] + "/static"
JWT_AUDIENCE = "chatrelay-demo"


@attrs.frozen(kw_only=True)
class DemoApp:
    """The demo, assembled: run `asgi` with an ASGI server.

    Attributes:
        asgi: The application: Socket.IO at ``/socket.io/`` (namespace ``/messages``),
            WebSocket at ``/ws``, REST under ``/api``, the page at ``/``.
        service: The demo's backend.
        relay: The relay both transports share.
        websocket: The WebSocket adapter (its ``max_frame_bytes`` is the server's
            frame limit).
    """

    asgi: ASGIApp
    service: DemoService
    relay: Relay
    websocket: WebSocketAdapter


def _redis(url: str, prefix: str) -> tuple[DemoStore, Backplane]:
    """The store and the backplane of one server in a cluster on the Redis at ``url``."""
    from ..backplanes.redis import RedisBackplane
    from ._redis_store import RedisStore

    store = RedisStore(url, prefix=f"{prefix}chatrelay-demo:")
    return store, RedisBackplane(url, prefix=prefix)


def create_app(
    *,
    auth: Literal["dev", "jwt"] = "dev",
    jwt_secret: str | None = None,
    allowed_origins: Sequence[str] | None = None,
    config: RelayConfig | None = None,
    seed: bool = True,
    redis_url: str | None = None,
    redis_prefix: str = "",
    token_lifetime: float = 12 * 3600,
) -> DemoApp:
    """Assemble the demo.

    Args:
        auth: ``"dev"`` takes identity from ``?userId=``; ``"jwt"`` requires a token
            signed with ``jwt_secret`` (the demo's ``/api/login`` issues them).
        jwt_secret: The HS256 secret for ``auth="jwt"``.
        allowed_origins: Web origins allowed to connect; by default any.
        config: Relay settings.
        seed: Create the demo users' conversations when the app starts (once per
            store: with Redis, the first server to start does it).
        redis_url: Make this server one of several: they share conversations,
            messages and events through the Redis at this URL (needs the ``redis``
            extra). In memory, alone, if ``None``.
        redis_prefix: Put in front of every Redis key (the data's and the relay's).
        token_lifetime: Seconds a token of ``/api/login`` is valid (``auth="jwt"``);
            the page refreshes it in band when the relay says it is expiring.

    Returns:
        The assembled demo.

    Raises:
        ValueError: If ``auth="jwt"`` has no ``jwt_secret``, or ``redis_url`` is
            malformed.
    """
    store, backplane = _redis(redis_url, redis_prefix) if redis_url is not None else (None, None)
    service = DemoService(store=store)
    authenticator: Authenticator | None = None
    if auth == "jwt":
        if not jwt_secret:
            raise ValueError("--auth jwt needs --jwt-secret")
        from ..auth.jwt import JWTAuthenticator

        authenticator = JWTAuthenticator(
            jwt_secret, algorithms=["HS256"], audience=JWT_AUDIENCE, name_claim="name"
        )
    # --8<-- [start:assemble]
    relay = Relay(
        config=config,
        authenticator=authenticator,
        authorize_join=service.authorize_join,
        on_delivered=service.on_delivered,
        backplane=backplane,
    )
    service.attach(relay)
    origins = list(allowed_origins) if allowed_origins else None
    websocket = WebSocketAdapter(relay, allowed_origins=origins or ["*"])
    socketio = SocketIOAdapter(relay, allowed_origins=origins or "*")
    # --8<-- [end:assemble]

    async def index(request: Request) -> FileResponse:
        return FileResponse(f"{_STATIC}/index.html")

    async def healthz(request: Request) -> JSONResponse:
        stats = relay.statistics()
        status = "draining" if stats.draining else "ok" if stats.healthy else "degraded"
        body = {
            "status": status,
            "node": stats.node_id,
            "connections": stats.connections,
            "nodes": stats.nodes,
            "backplane": {"kind": "local" if backplane is None else "redis"}
            | attrs.asdict(stats.backplane),
        }
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    async def livez(request: Request) -> JSONResponse:
        # Liveness: the process answers. A draining or degraded server is alive:
        # restarting it would not help (it reconnects to Redis by itself).
        return JSONResponse({"status": "alive", "node": relay.node_id})

    # Prometheus metrics of this relay (its own registry: one app, one relay).
    registry = CollectorRegistry()
    instrument(relay, registry)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def demo_config(request: Request) -> JSONResponse:
        return JSONResponse({"auth": auth})

    async def login(request: Request) -> JSONResponse:
        # A real application signs tokens in its own login flow; the demo trusts the
        # user id so that two tabs can be two users.
        if auth != "jwt" or jwt_secret is None:
            return JSONResponse(
                {"status": 404, "code": "not_found", "message": "login is for --auth jwt"},
                status_code=404,
            )
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        user_id = body.get("userId") if isinstance(body, dict) else None
        user = service.users.get(user_id) if isinstance(user_id, str) else None
        if user is None:
            return JSONResponse(
                {"status": 404, "code": "not_found", "message": "no such user"}, status_code=404
            )
        import jwt

        now = datetime.now(UTC)
        token = jwt.encode(
            {
                "sub": user.id,
                "name": user.name,
                "aud": JWT_AUDIENCE,
                "iat": now,
                "exp": now + timedelta(seconds=token_lifetime),
            },
            jwt_secret,
            algorithm="HS256",
        )
        return JSONResponse({"token": token})

    # --8<-- [start:lifespan]
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(service.store)
            if seed:
                await service.seed()
            await stack.enter_async_context(relay)
            await stack.enter_async_context(socketio)
            yield

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", healthz),
        Route("/livez", livez),
        Route("/metrics", metrics),
        Route("/api/config", demo_config),
        Route("/api/login", login, methods=["POST"]),
        *rest_routes(service),
        websocket.route("/ws"),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return DemoApp(asgi=socketio.asgi_app(app), service=service, relay=relay, websocket=websocket)
    # --8<-- [end:lifespan]
