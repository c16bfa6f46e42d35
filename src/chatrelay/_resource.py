"""The one base of everything that is used with ``async with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import anyio.abc

__all__ = ["AsyncResource"]


class AsyncResource(anyio.abc.AsyncResource):
    """Started by `start` and closed by `aclose`; ``async with`` does both.

    Entering calls `start` and returns the resource itself; leaving calls `aclose`,
    whatever happened inside, as anyio's `AsyncResource` does. Subclasses implement
    `aclose`, and `start` if they have something to start.
    """

    __slots__ = ()

    async def start(self) -> None:
        """Start. The default does nothing."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()
