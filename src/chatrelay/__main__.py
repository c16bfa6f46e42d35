"""The ``chatrelay`` command (also ``python -m chatrelay``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatrelay",
        description="The real-time layer of a chat backend.",
    )
    parser.add_argument("--version", action="version", version=f"chatrelay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="walk through a conversation between two users, in memory",
        description=(
            "Run a relay in this process, connect alice (two tabs) and bob through the"
            " in-memory transport, and print every event that crosses the wire while"
            " they join, type, send a message, read it and leave."
        ),
    )
    demo.add_argument(
        "--typing-timeout",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="how long a typing episode lasts without a refresh (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        import anyio

        from ._demo import run_demo

        if args.typing_timeout <= 0:
            _parser().error("--typing-timeout must be > 0")
        try:
            anyio.run(run_demo, args.typing_timeout)
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
