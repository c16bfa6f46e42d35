"""Typing indicators: one start and one stop per typing episode (sans-I/O)."""

from __future__ import annotations

import heapq

import attrs

from ._types import ConnectionId, ConversationId, UserId

__all__ = ["TypingChanged", "TypingDebouncer"]


@attrs.frozen(kw_only=True)
class TypingChanged:
    """A typing episode started or ended.

    Attributes:
        conversation_id: Where the user types.
        user_id: Who types.
        is_typing: ``True`` when the episode started, ``False`` when it ended.
        connection_id: The connection that caused the change, if a connection did
            (``None`` for a timeout or a message sent by the application).
    """

    conversation_id: ConversationId
    user_id: UserId
    is_typing: bool
    connection_id: ConnectionId | None


@attrs.define
class _Episode:
    owner: ConnectionId
    deadline: float


class TypingDebouncer:
    """Turns a stream of keystroke events into exactly one start and one stop per episode.

    An episode is one user typing in one conversation. The first ``start`` opens it,
    later ones refresh it; it ends on ``stop``, when ``timeout`` seconds pass without a
    refresh (`expire`), when the connection that last refreshed it leaves the room
    or disconnects, or when the application emits a message from that user there
    (`message_sent`). Nothing here reads a clock; `next_deadline` tells the
    caller when to call `expire`.

    Args:
        timeout: Seconds an episode lasts without a refresh.
    """

    def __init__(self, *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.timeout = timeout
        self._episodes: dict[ConversationId, dict[UserId, _Episode]] = {}
        self._owned: dict[ConnectionId, set[tuple[ConversationId, UserId]]] = {}
        self._deadlines: list[tuple[float, ConversationId, UserId]] = []

    def start(
        self, conversation: ConversationId, user: UserId, connection: ConnectionId, now: float
    ) -> TypingChanged | None:
        """Open or refresh the episode of ``user`` in ``conversation``.

        Returns:
            A start change if a new episode opened; ``None`` for a refresh.
        """
        key = (conversation, user)
        deadline = now + self.timeout
        heapq.heappush(self._deadlines, (deadline, conversation, user))
        room = self._episodes.setdefault(conversation, {})
        episode = room.get(user)
        if episode is not None:
            if episode.owner != connection:
                self._disown(episode.owner, key)
                episode.owner = connection
                self._owned.setdefault(connection, set()).add(key)
            episode.deadline = deadline
            return None
        room[user] = _Episode(owner=connection, deadline=deadline)
        self._owned.setdefault(connection, set()).add(key)
        return TypingChanged(
            conversation_id=conversation, user_id=user, is_typing=True, connection_id=connection
        )

    def stop(
        self, conversation: ConversationId, user: UserId, connection: ConnectionId | None = None
    ) -> TypingChanged | None:
        """End the episode of ``user`` in ``conversation``, if one is open.

        Args:
            conversation: Where the user typed.
            user: Who typed.
            connection: The connection that asked, reported in the change.

        Returns:
            A stop change, or ``None`` if no episode was open.
        """
        room = self._episodes.get(conversation)
        episode = room.pop(user, None) if room is not None else None
        if episode is None:
            return None
        if not room:
            del self._episodes[conversation]
        self._disown(episode.owner, (conversation, user))
        return TypingChanged(
            conversation_id=conversation, user_id=user, is_typing=False, connection_id=connection
        )

    def message_sent(self, conversation: ConversationId, user: UserId) -> TypingChanged | None:
        """End the episode because ``user`` sent a message in ``conversation``."""
        return self.stop(conversation, user)

    def leave(self, connection: ConnectionId, conversation: ConversationId) -> TypingChanged | None:
        """End the episode in ``conversation`` that ``connection`` owns, as it leaves."""
        for conv, user in list(self._owned.get(connection, ())):
            if conv == conversation:
                return self.stop(conv, user, connection)
        return None

    def disconnect(self, connection: ConnectionId) -> list[TypingChanged]:
        """End every episode that ``connection`` owns, as it disconnects."""
        changes = []
        for conversation, user in sorted(self._owned.get(connection, ())):
            change = self.stop(conversation, user, connection)
            if change is not None:
                changes.append(change)
        return changes

    def expire(self, now: float) -> list[TypingChanged]:
        """End the episodes not refreshed within the timeout, as of ``now``."""
        changes = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, conversation, user = heapq.heappop(self._deadlines)
            episode = self._episodes.get(conversation, {}).get(user)
            if episode is None or episode.deadline != deadline:
                continue  # refreshed or already stopped
            change = self.stop(conversation, user)
            if change is not None:
                changes.append(change)
        return changes

    def next_deadline(self) -> float | None:
        """When `expire` next has something to do, or ``None``."""
        while self._deadlines:
            deadline, conversation, user = self._deadlines[0]
            episode = self._episodes.get(conversation, {}).get(user)
            if episode is not None and episode.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)  # stale entry
        return None

    def typing(self, conversation: ConversationId) -> list[UserId]:
        """The users typing in ``conversation`` now, in the order they started."""
        return list(self._episodes.get(conversation, ()))

    def is_typing(self, conversation: ConversationId, user: UserId) -> bool:
        """Tell whether ``user`` has an open episode in ``conversation``."""
        return user in self._episodes.get(conversation, ())

    def _disown(self, connection: ConnectionId, key: tuple[ConversationId, UserId]) -> None:
        owned = self._owned.get(connection)
        if owned is not None:
            owned.discard(key)
            if not owned:
                del self._owned[connection]
