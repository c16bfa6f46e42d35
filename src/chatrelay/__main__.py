"""The ``chatrelay`` command (also ``python -m chatrelay``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from ._config import Limits, RelayConfig
from ._version import __version__

__all__ = ["main"]

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatrelay", description="The real-time layer of a chat backend."
    )
    parser.add_argument("--version", action="version", version=f"chatrelay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="serve a small WhatsApp-Web-style chat that shows chatrelay working",
        description=(
            "Serve the demo chat: a web page at / (open /?user=alice and /?user=bob in"
            " two tabs), a REST API under /api, Socket.IO at /socket.io/ (namespace"
            " /messages) and WebSocket at /ws, all on one port. In memory by default;"
            " with --redis-url, one server of several that share conversations, messages"
            " and real-time events."
        ),
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (%(default)s)")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    demo.add_argument(
        "--auth",
        choices=("dev", "jwt"),
        default="dev",
        help="dev: identity from ?userId=; jwt: HS256 tokens from /api/login (%(default)s)",
    )
    demo.add_argument("--jwt-secret", metavar="S", help="the HS256 secret for --auth jwt")
    demo.add_argument(
        "--allowed-origins",
        nargs="+",
        metavar="ORIGIN",
        help="web origins whose pages may connect, as scheme://host[:port] (default: any)",
    )
    demo.add_argument(
        "--redis-url",
        metavar="URL",
        help=(
            "keep the data in Redis and relay events through it, so that every demo"
            " started with the same URL serves the same chat, such as"
            " redis://127.0.0.1:6379/0 (needs the redis extra)"
        ),
    )
    demo.add_argument(
        "--drain-window",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help=(
            "on SIGTERM or Ctrl-C, close the connections spread over this many seconds,"
            " telling each one first, before stopping; 0 stops at once (%(default)s)"
        ),
    )
    demo.add_argument(
        "--max-connections-per-user",
        type=int,
        default=100,
        metavar="N",
        help="connections (tabs) one user may hold at once on this server (%(default)s)",
    )
    demo.add_argument(
        "--log-level", choices=_LOG_LEVELS, default="info", help="log level (%(default)s)"
    )
    return parser


def _check_redis(parser: argparse.ArgumentParser, url: str) -> None:
    """Exit with a message if ``url`` is malformed (2) or Redis does not answer (1)."""
    try:
        from .demo._redis_store import check_redis
        from .demo._store import StoreUnavailable
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        parser.exit(
            2, f"--redis-url needs the redis extra: pip install 'chatrelay[demo,redis]' ({exc})\n"
        )
    try:
        asyncio.run(check_redis(url))
    except ValueError as exc:
        parser.error(f"--redis-url: {exc}")
    except StoreUnavailable as exc:
        parser.exit(1, f"chatrelay demo: {exc}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {args.port}")
    if args.auth == "jwt" and not args.jwt_secret:
        parser.error("--auth jwt needs --jwt-secret")
    if args.jwt_secret and args.auth != "jwt":
        parser.error("--jwt-secret goes with --auth jwt")
    if args.max_connections_per_user < 1:
        parser.error(
            f"--max-connections-per-user must be 1 or more, not {args.max_connections_per_user}"
        )
    if args.drain_window < 0:
        parser.error(f"--drain-window must be 0 or more, not {args.drain_window}")
    try:
        import uvicorn

        from .demo import create_app
        from .demo._logs import redact_server_logs
        from .demo._serve import DrainingServer
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        parser.exit(
            2, f"chatrelay demo needs the demo extra: pip install 'chatrelay[demo]' ({exc})\n"
        )
    if args.redis_url is not None:
        _check_redis(parser, args.redis_url)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = create_app(
            auth=args.auth,
            jwt_secret=args.jwt_secret,
            allowed_origins=args.allowed_origins,
            redis_url=args.redis_url,
            config=RelayConfig(
                limits=Limits(max_connections_per_user=args.max_connections_per_user)
            ),
        )
    except ValueError as exc:  # a weak --jwt-secret, a malformed --allowed-origins
        parser.error(str(exc))
    redact_server_logs()
    print(f"chatrelay demo: open http://{args.host}:{args.port}/?user=alice", flush=True)
    server = DrainingServer(
        uvicorn.Config(
            demo.asgi,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            ws_max_size=demo.websocket.max_frame_bytes,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=5,
        ),
        demo.relay,
        args.drain_window,
    )
    # SIGINT and SIGTERM drain the relay, then start uvicorn's graceful shutdown;
    # uvicorn re-raises the signal once it is done, which here means only that the
    # user asked to stop.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
