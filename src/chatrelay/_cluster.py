"""What this node knows of the other nodes of a cluster (sans-I/O).

Each relay node publishes its own state changes (users online, room members, typing)
over the backplane; every other node feeds them into a `ClusterView`. The view
answers "is this user online anywhere else?", "who else is in this room?", and tells
when a node stopped sending heartbeats, so that its users go offline elsewhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import attrs

from ._types import ConversationId, NodeId, UserId

__all__ = ["ClusterView", "NodeState"]


@attrs.define
class NodeState:
    """The state one remote node reported.

    Attributes:
        online: Users online on that node (connected or inside their grace period).
        members: Room → users with a connection in it on that node.
        typing: Room → users typing in it, with the episode on that node.
        last_heard: When the node was last heard from (caller's clock).
    """

    online: set[UserId] = attrs.field(factory=set)
    members: dict[ConversationId, set[UserId]] = attrs.field(factory=dict)
    typing: dict[ConversationId, set[UserId]] = attrs.field(factory=dict)
    last_heard: float = 0.0


class ClusterView:
    """The other nodes' users, rooms and typing, as their updates arrived.

    Args:
        node_timeout: Seconds without a heartbeat after which a node counts as dead.
        grace: Seconds the users of a node that left gracefully stay online here, so
            that a client reconnecting to another node does not flap.
    """

    def __init__(self, *, node_timeout: float, grace: float) -> None:
        self.node_timeout = node_timeout
        self.grace = grace
        self._nodes: dict[NodeId, NodeState] = {}
        self._deadlines: list[tuple[float, NodeId]] = []
        # users of nodes that said goodbye, online here until their deadline
        self._leaving: dict[UserId, float] = {}
        self._leaving_deadlines: list[tuple[float, UserId]] = []
        self._suspended = False

    # --- updates -------------------------------------------------------------------

    def heard(self, node: NodeId, now: float) -> bool:
        """Record a sign of life from ``node``.

        Returns:
            ``True`` if the node was not known yet (the caller should ask it for its
            state).
        """
        state = self._nodes.get(node)
        new = state is None
        if state is None:
            state = self._nodes[node] = NodeState()
        state.last_heard = now
        heapq.heappush(self._deadlines, (now + self.node_timeout, node))
        return new

    def replace(self, node: NodeId, state: NodeState, now: float) -> None:
        """Replace everything known of ``node`` by a full snapshot of its state."""
        state.last_heard = now
        self._nodes[node] = state
        heapq.heappush(self._deadlines, (now + self.node_timeout, node))

    def set_online(self, node: NodeId, user: UserId, online: bool, now: float) -> None:
        """Record that ``user`` came online or went offline on ``node``."""
        self.heard(node, now)
        state = self._nodes[node]
        if online:
            state.online.add(user)
        else:
            state.online.discard(user)

    def set_member(
        self, node: NodeId, conversation: ConversationId, user: UserId, joined: bool, now: float
    ) -> None:
        """Record that ``user`` joined or left ``conversation`` on ``node``."""
        self.heard(node, now)
        _toggle(self._nodes[node].members, conversation, user, joined)

    def set_typing(
        self, node: NodeId, conversation: ConversationId, user: UserId, typing: bool, now: float
    ) -> None:
        """Record that ``user`` started or stopped typing in ``conversation`` on ``node``."""
        self.heard(node, now)
        _toggle(self._nodes[node].typing, conversation, user, typing)

    def remove(self, node: NodeId, now: float, *, graceful: bool) -> set[UserId]:
        """Forget ``node``: it said goodbye (``graceful``) or stopped sending heartbeats.

        The users of a node that left gracefully stay online here for the grace period.

        Returns:
            The users that were online on the node.
        """
        state = self._nodes.pop(node, None)
        if state is None:
            return set()
        if graceful and self.grace > 0:
            deadline = now + self.grace
            for user in state.online:
                self._leaving[user] = max(deadline, self._leaving.get(user, deadline))
                heapq.heappush(self._leaving_deadlines, (self._leaving[user], user))
        return state.online

    def suspend(self) -> None:
        """Stop counting silent nodes as dead: this node cannot hear anyone now.

        Call it when the backplane loses its connection. Silence then says nothing
        about the other nodes, and counting them dead would take every remote user
        offline here only to bring them back a moment later.
        """
        self._suspended = True

    def resume(self, now: float) -> None:
        """Count silent nodes as dead again, as if every node had been heard ``now``.

        Call it when the backplane is connected again: a node that died meanwhile
        is found out ``node_timeout`` later.
        """
        self._suspended = False
        for node in self._nodes:
            self.heard(node, now)

    @property
    def suspended(self) -> bool:
        """Whether silent nodes are not counted as dead now (see `suspend`)."""
        return self._suspended

    def expire(self, now: float) -> tuple[list[tuple[NodeId, NodeState]], set[UserId]]:
        """Drop nodes silent for longer than the timeout, and end goodbye grace periods.

        Nodes are not counted dead while `suspend` ed.

        Returns:
            The dead nodes with the last state each reported (its users, rooms and
            typing, which the caller ends), and the users whose goodbye grace period
            ended.
        """
        dead: list[tuple[NodeId, NodeState]] = []
        while not self._suspended and self._deadlines and self._deadlines[0][0] <= now:
            _, node = heapq.heappop(self._deadlines)
            state = self._nodes.get(node)
            if state is not None and state.last_heard + self.node_timeout <= now:
                self.remove(node, now, graceful=False)
                dead.append((node, state))
        ended: set[UserId] = set()
        while self._leaving_deadlines and self._leaving_deadlines[0][0] <= now:
            deadline, user = heapq.heappop(self._leaving_deadlines)
            if self._leaving.get(user) == deadline:
                del self._leaving[user]
                ended.add(user)
        return dead, ended

    def next_deadline(self) -> float | None:
        """When `expire` next has something to do, or ``None``."""
        candidates = []
        if self._deadlines and not self._suspended:
            candidates.append(self._deadlines[0][0])
        if self._leaving_deadlines:
            candidates.append(self._leaving_deadlines[0][0])
        return min(candidates, default=None)

    # --- queries -------------------------------------------------------------------

    def nodes(self) -> frozenset[NodeId]:
        """The nodes known to be alive."""
        return frozenset(self._nodes)

    def state_of(self, node: NodeId) -> NodeState | None:
        """What ``node`` reported, if it is known (treat it as read-only)."""
        return self._nodes.get(node)

    def is_online(self, user: UserId) -> bool:
        """Tell whether ``user`` is online on another node (or inside a goodbye grace)."""
        return user in self._leaving or any(user in s.online for s in self._nodes.values())

    def online_users(self) -> set[UserId]:
        """The users online on other nodes."""
        users = set(self._leaving)
        for state in self._nodes.values():
            users |= state.online
        return users

    def members(self, conversation: ConversationId) -> set[UserId]:
        """The users with a connection in ``conversation`` on other nodes."""
        return _union(s.members.get(conversation, ()) for s in self._nodes.values())

    def typing(self, conversation: ConversationId) -> set[UserId]:
        """The users typing in ``conversation`` on other nodes."""
        return _union(s.typing.get(conversation, ()) for s in self._nodes.values())

    def rooms_of_user(self, user: UserId) -> set[ConversationId]:
        """The rooms in which ``user`` has a connection on other nodes."""
        return {
            conversation
            for state in self._nodes.values()
            for conversation, users in state.members.items()
            if user in users
        }


def _toggle(
    table: dict[ConversationId, set[UserId]], key: ConversationId, user: UserId, present: bool
) -> None:
    if present:
        table.setdefault(key, set()).add(user)
        return
    users = table.get(key)
    if users is not None:
        users.discard(user)
        if not users:
            del table[key]


def _union(sets: Iterable[Iterable[UserId]]) -> set[UserId]:
    result: set[UserId] = set()
    for users in sets:
        result.update(users)
    return result
