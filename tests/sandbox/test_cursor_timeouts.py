"""Idle cursor expiry in the sandbox's cursor registry, on a clock the test moves."""

from __future__ import annotations

import pytest

from mongodb_sandbox.cursors import (
    CURSOR_TIMEOUT_SECONDS,
    SESSION_TIMEOUT_SECONDS,
    CursorRegistry,
    ListCursor,
)
from mongodb_sandbox.errors import CommandError, ErrorCode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry(clock: Clock) -> CursorRegistry:
    return CursorRegistry(monotonic=clock)


def gone(cursors: CursorRegistry, cursor_id: int) -> bool:
    try:
        cursors.get(cursor_id)
    except CommandError as error:
        assert error.code == ErrorCode.CURSOR_NOT_FOUND
        return True
    cursors.release(cursor_id)
    return False


def test_a_cursor_outside_a_session_dies_after_ten_idle_minutes() -> None:
    clock = Clock()
    cursors = registry(clock)
    cursor_id = cursors.register(ListCursor("db.c", []))
    clock.now += CURSOR_TIMEOUT_SECONDS - 1
    assert not gone(cursors, cursor_id)  # a getMore restarts its idle time
    clock.now += CURSOR_TIMEOUT_SECONDS - 1
    assert not gone(cursors, cursor_id)
    clock.now += CURSOR_TIMEOUT_SECONDS + 1
    assert gone(cursors, cursor_id)


def test_a_cursor_in_a_session_lives_as_long_as_its_session_is_used() -> None:
    clock = Clock()
    cursors = registry(clock)
    cursor_id = cursors.register(ListCursor("db.c", []))
    cursors.bind_session(cursor_id, b"session")
    clock.now += CURSOR_TIMEOUT_SECONDS + 1
    assert not gone(cursors, cursor_id)  # past cursorTimeoutMillis: sessions rule it
    clock.now += SESSION_TIMEOUT_SECONDS - 1
    cursors.session_used(b"session")  # another command of the session refreshes it
    clock.now += SESSION_TIMEOUT_SECONDS - 1
    assert not gone(cursors, cursor_id)
    clock.now += SESSION_TIMEOUT_SECONDS + 1
    assert gone(cursors, cursor_id)


def test_a_cursor_awaiting_in_a_getmore_is_never_idle() -> None:
    clock = Clock()
    cursors = registry(clock)
    cursor_id = cursors.register(ListCursor("db.c", []))
    cursors.get(cursor_id)  # a long getMore begins
    clock.now += CURSOR_TIMEOUT_SECONDS * 2
    assert cursors.expire_idle() == 0
    assert not gone(cursors, cursor_id)
    cursors.release(cursor_id)
    assert cursors.expire_idle() == 1


@pytest.mark.parametrize("ended", [[b"session"], [b"other", b"session"]])
def test_ending_a_session_kills_its_cursors_only(ended: list[bytes]) -> None:
    cursors = registry(Clock())
    mine = cursors.register(ListCursor("db.c", []))
    cursors.bind_session(mine, b"session")
    loose = cursors.register(ListCursor("db.c", []))
    cursors.end_sessions(ended)
    assert gone(cursors, mine)
    assert not gone(cursors, loose)
