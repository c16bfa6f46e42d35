"""The rules that combine rooms, presence, typing and the cluster: sans-I/O.

`Hub` owns the four state objects and the rules that tie them together: leaving a
room ends one's typing there, the first local member of a room subscribes this
node to it, a user is announced online unless already online elsewhere, a dead
node's typing episodes end. It never awaits, never reads a clock and never touches
a socket or the backplane: each call takes what happened (and ``now``, the event
loop's clock, plus ``wall``, the wall clock, where a time is reported) and returns
the effects to carry out, in order, as websockets' protocol objects return the data
to send. `Relay` carries them out: it owns the tasks, the clock, the hooks and the
backplane.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import attrs

from . import codec
from ._cluster import ClusterView, NodeState
from ._debounce import TypingChanged, TypingDebouncer
from ._exceptions import CloseReason
from ._hub_effects import (
    Announce,
    Close,
    Effect,
    Fanout,
    Publish,
    Subscribe,
    Tell,
    Unsubscribe,
    Wake,
)
from ._lifetime import Lifetimes
from ._nodes import (
    CONTROL_TOPIC,
    Bye,
    DisconnectUser,
    Heartbeat,
    MemberChanged,
    NodeMessage,
    PresenceChanged,
    RoomEvent,
    StateReport,
    SyncRequest,
    TypingEvent,
    room_topic,
)
from ._outbound import Outbound, _AckContext
from ._presence import PresenceTracker
from ._rooms import RoomRegistry
from ._sequencer import Released, Sequencer, position_of
from ._types import ConnectionId, ConversationId, NodeId, UserId
from .events import (
    AuthExpiring,
    Position,
    SyncRequired,
    TypingIndicator,
    TypingUser,
    UserOffline,
    UserOnline,
)

__all__ = [
    "Announce",
    "Close",
    "Effect",
    "Fanout",
    "Hub",
    "Publish",
    "Subscribe",
    "Tell",
    "Unsubscribe",
    "Wake",
]

logger = logging.getLogger("chatrelay")


class Hub:
    """Rooms, presence, typing and the other nodes' state, with the rules that tie them.

    Args:
        node_id: This node's id (requests for its state name it).
        typing_timeout: Seconds a typing episode lasts without a refresh.
        presence_grace: Seconds a user stays online after its last connection closed.
        node_timeout: Seconds of silence after which another node counts as dead.
        reorder_window: Seconds a room event that came before an earlier one is held
            (see `chatrelay._sequencer`).

    Attributes:
        rooms: Which local connection is in which room.
        presence: Which local user is online, with the grace period.
        typing: The local typing episodes.
        cluster: The other nodes' users, rooms and typing.
        sequencer: Each room's numbered events, in offset order.
        resyncs: Connections told to resynchronize a room (``sync:required``).
    """

    def __init__(
        self,
        *,
        node_id: NodeId,
        typing_timeout: float,
        presence_grace: float,
        node_timeout: float,
        reorder_window: float = 1.0,
        token_warning: float = 60.0,
        token_grace: float = 25.0,
    ) -> None:
        self.node_id = node_id
        self._grace = presence_grace
        self._node_timeout = node_timeout
        self.rooms = RoomRegistry()
        self.presence = PresenceTracker(grace=presence_grace)
        self.typing = TypingDebouncer(timeout=typing_timeout)
        self.cluster = ClusterView(node_timeout=node_timeout, grace=presence_grace)
        self.sequencer: Sequencer[tuple[Outbound, ConnectionId | None]] = Sequencer(reorder_window)
        self.lifetimes = Lifetimes(warning=token_warning, grace=token_grace)
        # Each local connection's display name, for the typing indicators it causes.
        self._names: dict[ConnectionId, str | None] = {}
        self.resyncs = 0

    # --- what the relay asks -----------------------------------------------------------

    def is_online(self, user: UserId) -> bool:
        """Whether a user is online anywhere in the cluster."""
        return self.presence.is_online(user) or self.cluster.is_online(user)

    def online_users(self) -> frozenset[UserId]:
        """The users online anywhere in the cluster."""
        return self.presence.online_users().union(self.cluster.online_users())

    def members(self, conversation: ConversationId) -> frozenset[UserId]:
        """The users with a connection in a room, anywhere in the cluster."""
        return self.rooms.members(conversation).union(self.cluster.members(conversation))

    def typing_users(self, conversation: ConversationId) -> frozenset[UserId]:
        """The users typing in a room now, anywhere in the cluster."""
        return frozenset(self.typing.typing(conversation)).union(self.cluster.typing(conversation))

    def next_deadline(self) -> float | None:
        """When `expire` next has something to do (event loop clock), if ever."""
        parts = (self.typing, self.presence, self.cluster, self.sequencer, self.lifetimes)
        return min((d for part in parts if (d := part.next_deadline()) is not None), default=None)

    def snapshot(self) -> NodeState:
        """This node's state, as other nodes keep it."""
        rooms = self.rooms.rooms()
        return NodeState(
            online=set(self.presence.online_users()),
            members={room: set(self.rooms.members(room)) for room in rooms},
            typing={room: set(users) for room in rooms if (users := self.typing.typing(room))},
        )

    # --- connections and requests ------------------------------------------------------

    def connect(
        self,
        conn: ConnectionId,
        user: UserId,
        name: str | None,
        now: float,
        *,
        expires_in: float | None = None,
    ) -> list[Effect]:
        """A connection opened: the user comes online unless it already was.

        ``expires_in``: seconds until its credentials expire, if they do.
        """
        self._names[conn] = name
        self.lifetimes.track(conn, expires_in, now)
        # Credentials that expire bring a deadline (the warning's) the timers must see.
        effects: list[Effect] = [] if expires_in is None else [Wake()]
        if self.presence.connect(user, conn, now) is None:
            return effects
        effects.append(Publish(CONTROL_TOPIC, PresenceChanged(user_id=user, online=True)))
        if not self.cluster.is_online(user):
            effects.append(Announce(UserOnline(user_id=user), exclude=conn))
        return effects

    def disconnect(self, conn: ConnectionId, user: UserId, now: float) -> list[Effect]:
        """A connection closed: its typing ends, it leaves its rooms, its grace starts."""
        effects: list[Effect] = []
        for change in self.typing.disconnect(conn):
            effects += self._typing_changed(change, exclude=conn)
        for conversation in self.rooms.rooms_of(conn):
            effects += self._leave_room(conn, user, conversation)
        self.presence.disconnect(user, conn, now)
        self.lifetimes.forget(conn)
        del self._names[conn]
        effects.append(Wake())  # the grace period's deadline
        return effects

    def join(self, conn: ConnectionId, user: UserId, conversation: ConversationId) -> list[Effect]:
        """A connection joins a room (the application allowed it)."""
        if self.rooms.is_in(conn, conversation):
            return []
        first_here = not self.rooms.connections(conversation)
        new_member = not self.rooms.is_member(user, conversation)
        self.rooms.join(conn, user, conversation)
        effects: list[Effect] = []
        if first_here:
            self.sequencer.open(conversation)
            effects.append(Subscribe(room_topic(conversation)))
        if new_member:
            change = MemberChanged(conversation_id=conversation, user_id=user, joined=True)
            effects.append(Publish(CONTROL_TOPIC, change))
        return effects

    def leave(self, conn: ConnectionId, user: UserId, conversation: ConversationId) -> list[Effect]:
        """A connection leaves a room; leaving ends its typing there."""
        effects: list[Effect] = []
        change = self.typing.leave(conn, conversation)
        if change is not None:
            effects += self._typing_changed(change, exclude=conn)
        return effects + self._leave_room(conn, user, conversation)

    def typing_start(
        self, conn: ConnectionId, user: UserId, conversation: ConversationId, now: float
    ) -> list[Effect]:
        """A keystroke: a new episode starts, or the running one is refreshed."""
        change = self.typing.start(conversation, user, conn, now)
        effects: list[Effect] = [Wake()]  # the episode's timeout
        if change is not None:
            effects += self._typing_changed(change, exclude=conn)
        return effects

    def typing_stop(
        self, conn: ConnectionId, user: UserId, conversation: ConversationId
    ) -> list[Effect]:
        """The user stopped typing."""
        change = self.typing.stop(conversation, user, conn)
        return [] if change is None else self._typing_changed(change, exclude=conn)

    def room_event(
        self,
        conversation: ConversationId,
        item: Outbound,
        exclude: ConnectionId | None,
        now: float,
    ) -> list[Effect]:
        """A room event, emitted here or by another node: to the room, in offset order."""
        position = item.position
        if position is None:
            return [Fanout(conversation, item, exclude)]
        released = self.sequencer.offer(conversation, position, (item, exclude), now)
        return self._released(conversation, released)

    def baseline(
        self, conversation: ConversationId, position: Position | None, now: float
    ) -> list[Effect]:
        """Where a room stood when this node's first member joined (from the history)."""
        return self._released(conversation, self.sequencer.baseline(conversation, position, now))

    def _released(
        self, conversation: ConversationId, released: Released[tuple[Outbound, ConnectionId | None]]
    ) -> list[Effect]:
        effects: list[Effect] = self.lost_room(conversation) if released.lost else []
        effects += [Fanout(conversation, item, exclude) for item, exclude in released.items]
        if self.sequencer.holding:
            effects.append(Wake())  # a hole opened: its deadline
        return effects

    def refresh(self, conn: ConnectionId, expires_in: float | None, now: float) -> list[Effect]:
        """A connection refreshed its credentials: its clock starts over."""
        self.lifetimes.track(conn, expires_in, now)
        return [Wake()]

    def disconnect_user(self, user: UserId, reason: str) -> list[Effect]:
        """Close every connection of ``user``: this node's now, the others' when told."""
        return [
            *self._close_user(user, reason),
            Publish(CONTROL_TOPIC, DisconnectUser(user_id=user, reason=reason)),
        ]

    def _close_user(self, user: UserId, reason: str) -> list[Effect]:
        connections = frozenset(self.presence.connections(user))
        return [Close(connections, reason)] if connections else []

    def message_sent(
        self, conversation: ConversationId, sender: UserId, exclude: ConnectionId | None
    ) -> list[Effect]:
        """A message from ``sender`` was emitted: its typing episode there ends.

        The connection that caused the message caused the stop too: not echoed to it.
        """
        change = self.typing.message_sent(conversation, sender)
        return [] if change is None else self._typing_changed(change, exclude=exclude)

    # --- time --------------------------------------------------------------------------

    def expire(self, now: float, wall: datetime) -> list[Effect]:
        """Typing timeouts, presence grace periods and silent nodes that ran out by ``now``."""
        effects: list[Effect] = []
        for change in self.typing.expire(now):
            effects += self._typing_changed(change, exclude=None)
        for presence in self.presence.expire(now):
            user = presence.user_id
            last_seen = _back(wall, now - presence.at)
            offline = PresenceChanged(
                user_id=user, online=False, last_seen=codec.format_timestamp(last_seen)
            )
            effects.append(Publish(CONTROL_TOPIC, offline))
            if not self.is_online(user):
                effects.append(Announce(UserOffline(user_id=user, last_seen=last_seen)))
        for conversation, released in self.sequencer.expire(now):
            effects += self._released(conversation, released)
        for due in self.lifetimes.expire(now):
            if due.kind == "expiring":
                expiring = AuthExpiring(expires_in=max(0, round(due.expires_in)))
                item = Outbound(codec.event_name(expiring), codec.encode(expiring))
                effects.append(Tell(due.connection, item))
            else:
                effects.append(Close(frozenset({due.connection}), CloseReason.TOKEN_EXPIRED))
        dead, ended = self.cluster.expire(now)
        for node, state in dead:
            logger.warning(
                "node %s stopped sending heartbeats; %d users offline", node, len(state.online)
            )
            effects += self._typing_vanished(state)
            effects += self._went_offline(state.online, _back(wall, self._node_timeout))
        # Their grace period started when their node said goodbye: they were last seen then.
        return effects + self._went_offline(ended, _back(wall, self._grace))

    # --- the other nodes -----------------------------------------------------------------

    def hello(self) -> list[Effect]:
        """This node joins the cluster: it asks every node for its state."""
        return [Publish(CONTROL_TOPIC, SyncRequest())]

    def goodbye(self) -> list[Effect]:
        """This node leaves the cluster on purpose."""
        return [Publish(CONTROL_TOPIC, Bye())]

    def heartbeat(self) -> list[Effect]:
        """This node is alive."""
        return [Publish(CONTROL_TOPIC, Heartbeat())]

    def lost_control(self) -> list[Effect]:
        """Control messages were lost: ask every node for its state again."""
        return [Publish(CONTROL_TOPIC, SyncRequest())]

    def lost_room(self, conversation: ConversationId) -> list[Effect]:
        """Room events were lost: this node's clients there must fetch the room again."""
        connections = len(self.rooms.connections(conversation))
        logger.warning(
            "room events of %r were lost; telling %d connections to resync",
            conversation,
            connections,
        )
        self.resyncs += connections
        event = SyncRequired(conversation_id=conversation)
        return [Fanout(conversation, Outbound(codec.event_name(event), codec.encode(event)))]

    def receive(
        self, node: NodeId, message: NodeMessage, now: float, wall: datetime
    ) -> list[Effect]:
        """Another node told us something."""
        effects: list[Effect] = []
        if self.cluster.heard(node, now):
            # A node not known yet: its liveness deadline may come before the timers'
            # next one, and (unless it is telling it now) this node needs its state.
            effects.append(Wake())
            if not isinstance(message, RoomEvent | StateReport | Bye):
                effects.append(Publish(CONTROL_TOPIC, SyncRequest(target=node)))
        match message:
            case RoomEvent():
                ack = message.ack
                context = None if ack is None else _AckContext(**attrs.asdict(ack))
                item = Outbound(
                    message.event, message.data, ack=context, position=position_of(message.data)
                )
                effects += self.room_event(message.conversation_id, item, message.exclude, now)
                if ack is not None:
                    effects += self.message_sent(
                        message.conversation_id, ack.sender_id, message.exclude
                    )
            case TypingEvent():
                conversation = message.conversation_id
                self.cluster.set_typing(node, conversation, message.user_id, message.is_typing, now)
                event = "typing:start" if message.is_typing else "typing:stop"
                effects.append(Fanout(conversation, Outbound(event, message.data), message.exclude))
            case MemberChanged():
                self.cluster.set_member(
                    node, message.conversation_id, message.user_id, message.joined, now
                )
            case PresenceChanged():
                user = message.user_id
                before = self.is_online(user)
                self.cluster.set_online(node, user, message.online, now)
                last_seen = codec.parse_timestamp(message.last_seen) if message.last_seen else wall
                effects += self._presence_moved(user, before, last_seen)
            case SyncRequest():
                if message.target in (None, self.node_id):
                    effects.append(Publish(CONTROL_TOPIC, StateReport(state=self.snapshot())))
            case StateReport():
                known = self.cluster.state_of(node)
                affected = message.state.online | (known.online if known else set())
                was_online = {user: self.is_online(user) for user in affected}
                self.cluster.replace(node, message.state, now)
                for user in affected:
                    effects += self._presence_moved(user, was_online[user], wall)
            case DisconnectUser():
                effects += self._close_user(message.user_id, message.reason)
            case Bye():
                # Users of a node that said goodbye stay online for the grace period.
                effects += self._went_offline(self.cluster.remove(node, now, graceful=True), wall)
                effects.append(Wake())
            case Heartbeat():
                pass  # heard() above is all it needs
        return effects

    def backplane_health(self, healthy: bool, now: float) -> list[Effect]:
        """The backplane went down, or came back."""
        if healthy:
            self.cluster.resume(now)
        else:
            # Silence from the other nodes now says nothing about them.
            self.cluster.suspend()
        return [Wake()]

    # --- rules ------------------------------------------------------------------------

    def _leave_room(
        self, conn: ConnectionId, user: UserId, conversation: ConversationId
    ) -> list[Effect]:
        self.rooms.leave(conn, conversation)
        effects: list[Effect] = []
        if not self.rooms.is_member(user, conversation):
            change = MemberChanged(conversation_id=conversation, user_id=user, joined=False)
            effects.append(Publish(CONTROL_TOPIC, change))
        if not self.rooms.connections(conversation):
            self.sequencer.close(conversation)
            effects.append(Unsubscribe(room_topic(conversation)))
        return effects

    def typing_item(self, change: TypingChanged) -> Outbound:
        """The ``typing:start`` / ``typing:stop`` event of a change, for the room."""
        name = self._names.get(change.connection_id) if change.connection_id else None
        event = TypingIndicator(
            conversation_id=change.conversation_id,
            user_id=change.user_id,
            is_typing=change.is_typing,
            user=TypingUser(id=change.user_id, name=name),
        )
        return Outbound(codec.event_name(event), codec.encode(event))

    def _typing_changed(
        self, change: TypingChanged, *, exclude: ConnectionId | None
    ) -> list[Effect]:
        item = self.typing_item(change)
        told = TypingEvent(
            conversation_id=change.conversation_id,
            user_id=change.user_id,
            is_typing=change.is_typing,
            json=item.json,
            exclude=exclude,
        )
        return [Fanout(change.conversation_id, item, exclude), Publish(CONTROL_TOPIC, told)]

    def _typing_vanished(self, state: NodeState) -> list[Effect]:
        """End a dead node's typing episodes for this node's clients; it cannot.

        Every node finds the dead node out by itself: nothing to publish.
        """
        effects: list[Effect] = []
        for conversation, users in state.typing.items():
            for user in users - self.typing_users(conversation):
                change = TypingChanged(
                    conversation_id=conversation, user_id=user, is_typing=False, connection_id=None
                )
                effects.append(Fanout(conversation, self.typing_item(change)))
        return effects

    def _went_offline(self, users: Iterable[UserId], last_seen: datetime) -> list[Effect]:
        return [
            Announce(UserOffline(user_id=user, last_seen=last_seen))
            for user in users
            if not self.is_online(user)
        ]

    def _presence_moved(self, user: UserId, before: bool, last_seen: datetime) -> list[Effect]:
        after = self.is_online(user)
        if after and not before:
            return [Announce(UserOnline(user_id=user))]
        if before and not after:
            return [Announce(UserOffline(user_id=user, last_seen=last_seen))]
        return []


def _back(wall: datetime, seconds: float) -> datetime:
    """The wall-clock time ``seconds`` before ``wall``."""
    return wall - timedelta(seconds=max(0.0, seconds))
