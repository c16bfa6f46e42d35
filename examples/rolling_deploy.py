"""A Starlette application that drains before it stops: for rolling deploys.

Run it with uvicorn (``uvicorn examples.rolling_deploy:app``). Before the process is
stopped, something calls ``POST /internal/drain`` (Kubernetes: a ``preStop`` hook):
the relay tells each connection ``server:draining``, closes them spread over the
window (clients reconnect to the other servers, gradually), and the health check
turns 503 so the load balancer sends no one new. Then SIGTERM stops uvicorn, which
finds nothing left to close.

The Kubernetes side (``terminationGracePeriodSeconds`` must cover the window plus
uvicorn's own shutdown)::

    spec:
      terminationGracePeriodSeconds: 40
      containers:
        - name: chat
          lifecycle:
            preStop:
              httpGet: {path: /internal/drain, port: 8000}
          readinessProbe:
            httpGet: {path: /healthz, port: 8000}
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chatrelay import Relay
from chatrelay.adapters.starlette import WebSocketAdapter

DRAIN_WINDOW = 20.0
"""Seconds over which the connections are closed; keep it under the grace period."""

relay = Relay()
websocket = WebSocketAdapter(relay)


async def healthz(request: Request) -> JSONResponse:
    """Readiness: 503 while draining, so the load balancer stops sending clients."""
    draining = relay.statistics().draining
    return JSONResponse(
        {"status": "draining" if draining else "ok"}, status_code=503 if draining else 200
    )


async def drain(request: Request) -> JSONResponse:
    """The pre-stop step: returns once every connection was closed (or was closing)."""
    window = float(request.query_params.get("window", DRAIN_WINDOW))
    if not relay.draining:
        await relay.drain(window)
    return JSONResponse({"status": "drained"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with relay:
        yield


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/internal/drain", drain, methods=["GET", "POST"]),
        websocket.route("/ws"),
    ],
    lifespan=lifespan,
)
