"""A conformance check for transports: one set of behaviours, any adapter."""

from __future__ import annotations

import logging

import anyio
import attrs

from .._config import Limits, RelayConfig
from .._connection import Delivery
from .._exceptions import ConnectionClosed
from .._relay import Relay
from ._behaviours import BEHAVIOURS, CHECKS, Context, NotChecked
from ._clients import TransportFactory

__all__ = ["BEHAVIOURS", "TransportReport", "check_transport"]

logger = logging.getLogger("chatrelay.testing")


@attrs.frozen(kw_only=True)
class TransportReport:
    """What `check_transport` checked.

    Attributes:
        transport: The name the check was given.
        checked: The behaviours that were checked and held, in order.
        not_checked: The behaviours that could not be checked, each with why.
    """

    transport: str
    checked: tuple[str, ...]
    not_checked: tuple[tuple[str, str], ...]


def _config(behaviour: str, presence_grace: float) -> RelayConfig:
    # Generous rates: the check sends requests faster than a person types.
    outgoing = 64 * 1024 if behaviour == "slow_consumer" else Limits().outgoing_bytes
    limits = Limits(rate=1000.0, burst=1000, outgoing_bytes=outgoing)
    return RelayConfig(typing_timeout=60.0, presence_grace=presence_grace, limits=limits)


async def check_transport(
    factory: TransportFactory,
    *,
    name: str | None = None,
    timeout: float = 5.0,
    presence_grace: float = 1.0,
) -> TransportReport:
    """Check that a transport keeps the behaviours every chatrelay transport keeps.

    For each behaviour, the check makes a relay of its own (the development
    authenticator, its own settings and an ``on_delivered`` recorder), enters it, and
    calls ``factory(relay)``: a context that serves that running relay and yields
    ``connect``, where ``connect(user_id)`` is a context that connects one client as
    that user (the development authenticator reads the ``userId`` query parameter)
    and disconnects it on leaving. Each client is a `TransportClient`; one that is
    also a `PausableClient` lets the slow-consumer behaviour be checked too. The
    behaviours (`BEHAVIOURS`) are:

    - ``join_ack``: ``conversation:join`` is acked with ``ok``, ``conversationId``,
      ``members`` and ``typing``; ``conversation:leave`` with ``ok`` and
      ``conversationId``;
    - ``members_only``: room events reach the room's members, not others, nor a
      client that left;
    - ``no_echo``: a room event is not sent back to the connection that caused it,
      but the same user's other connections get it;
    - ``typing_episode``: repeated starts and stops reach the room as exactly one
      ``typing:start`` and one ``typing:stop``;
    - ``errors_keep_connection``: a bad request gets one ``error`` event and a failed
      ack with the same fields; the next request on that connection works;
    - ``delivery_ack``: a client's ack of ``message:received`` reaches
      ``on_delivered``; the sender's own ack does not;
    - ``presence_grace``: a reconnect within the presence grace sends no
      ``user:offline`` (nor a second ``user:online``); the last close does, after it;
    - ``ack_ordering``: a request's ack arrives after every event the relay handed
      to the connection before it (a burst of 200, some of 1 KiB);
    - ``slow_consumer``: a client that stops reading is closed, the relay forgets
      it, and a client that reads gets every event in order. Only with a
      `PausableClient`: otherwise the report lists it in ``not_checked`` with the
      reason (and the check logs it), never silently;
    - ``recovery``: room events carry ``position``; a client that joins again with
      the position of the last event it got receives the missed events, in order,
      before the ack (``recovered: true``), then live ones, each once; a position of
      another epoch is answered ``recovered: false`` with nothing replayed;
    - ``server_closes_say_why``: ``disconnect_user`` closes that user's client and no
      other, ``drain`` sends ``server:draining`` then closes; each close says why
      (``disconnected``, ``server_restart``) in its reason or an ``error`` event.

    Example::

        @asynccontextmanager
        async def serve(relay: Relay) -> AsyncIterator[Connect]:
            transport = MemoryTransport(relay)
            yield lambda user: transport.connect(user)

        async def test_memory_transport() -> None:
            report = await check_transport(serve, name="memory")
            assert not report.not_checked

    Args:
        factory: Serves a running relay; called once per behaviour.
        name: Names the transport in messages; defaults to the factory's name.
        timeout: Seconds any one wait may take.
        presence_grace: The relays' presence grace, in seconds: longer than a client
            of the transport takes to reconnect, since ``presence_grace`` checks that
            such a reconnect does not flap.

    Returns:
        Which behaviours were checked and which could not be, with why.

    Raises:
        AssertionError: Naming the transport and the first behaviour that broke.
    """
    label = name if name is not None else getattr(factory, "__name__", repr(factory))
    checked: list[str] = []
    not_checked: list[tuple[str, str]] = []
    for behaviour, check in CHECKS.items():
        deliveries: list[Delivery] = []

        async def record(delivery: Delivery, deliveries: list[Delivery] = deliveries) -> None:
            deliveries.append(delivery)

        relay = Relay(config=_config(behaviour, presence_grace), on_delivered=record)
        failure: BaseException | None = None
        skipped: str | None = None
        async with relay, factory(relay) as connect:
            ctx = Context(relay, connect, timeout, deliveries, presence_grace)
            # Failures are raised below, outside the factory's context, so that they
            # are not wrapped in the exception group of a task group it may run.
            try:
                with anyio.fail_after(timeout * 10):
                    await check(ctx)
            except BaseException as exc:  # sorted out by _outcome
                outcome = _outcome(exc)
                if isinstance(outcome, str):
                    skipped = outcome
                else:
                    failure = outcome
        if failure is not None:
            raise AssertionError(f"{label}: {behaviour}: {_describe(failure)}") from failure
        if skipped is not None:
            logger.info("%s: %s not checked: %s", label, behaviour, skipped)
            not_checked.append((behaviour, skipped))
        else:
            checked.append(behaviour)
    return TransportReport(transport=label, checked=tuple(checked), not_checked=tuple(not_checked))


def _outcome(exc: BaseException) -> str | BaseException:
    """What a behaviour's exception means: a reason it was not checked, or a failure.

    A client's context may run a task group, which wraps what the check raised in an
    exception group of one: take it out. Anything else (a bug, a cancellation) is
    raised as it is.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, NotChecked):
        return str(exc)
    if isinstance(exc, AssertionError | TimeoutError | ConnectionClosed):
        return exc
    raise exc


def _describe(failure: BaseException) -> str:
    if isinstance(failure, AssertionError):
        return str(failure)
    if isinstance(failure, TimeoutError):
        return f"timed out waiting ({failure or 'an event did not arrive'})"
    return f"the connection closed unexpectedly ({failure})"
