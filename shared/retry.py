"""The retry budget every transient fault gets, whatever service it comes from.

After a transient fault the step pauses, growing from 0.1 s to 5 s with jitter, and tries again
until the fault has lasted its budget (a setting, e.g. MONGODB_RETRY_SECONDS) without any
progress; then it fails with one line naming the step, the fault and the setting. The services'
own modules decide which errors are transient and how to name them (`shared.source.retry` for
MongoDB, `shared.storage_retry` for Azure Storage).
"""

from __future__ import annotations

import logging
import random
import time

from shared.errors import MirrorError

log = logging.getLogger(__name__)

FIRST_PAUSE_SECONDS = 0.1
LONGEST_PAUSE_SECONDS = 5.0
DOUBLINGS = 6  # 0.1 s doubled six times passes the longest pause
MESSAGE_CHARS = 300  # a service's message is one short sentence; anything longer is a dump


def one_line(text: str) -> str:
    """``text`` cut to one line of at most MESSAGE_CHARS characters."""
    text = text.splitlines()[0] if text else ""
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


class RetryBudget:
    """How long one step keeps retrying; the budget restarts whenever the step progresses.

    ``what`` names the step in messages ("db.orders partition 3"); ``setting`` names the setting
    that gave ``budget_seconds``. A budget of 0 turns retrying off.
    """

    def __init__(self, what: str, budget_seconds: float, setting: str) -> None:
        self.what = what
        self.budget_seconds = budget_seconds
        self.setting = setting
        self._failing_since: float | None = None
        self._failures = 0

    @property
    def retrying(self) -> bool:
        """A transient fault met since the last progress: an attempt now repeats one whose
        effect may have landed."""
        return self._failures > 0

    def progressed(self) -> None:
        """The step moved on: the next fault gets the whole budget again."""
        self._failing_since = None
        self._failures = 0

    def pause(self, fault: str) -> None:
        """Wait before the next attempt after the transient ``fault`` (one line), or raise a
        one-line MirrorError when the fault has outlasted the budget."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        waited = now - self._failing_since
        if waited >= self.budget_seconds:
            raise MirrorError(
                f"{self.what}: {fault} (still failing after {self._failures + 1} attempts in "
                f"{waited:.0f}s; {self.setting}={self.budget_seconds:g})"
            ) from None
        pause = min(
            LONGEST_PAUSE_SECONDS,
            FIRST_PAUSE_SECONDS * 2 ** min(self._failures, DOUBLINGS),
            self.budget_seconds - waited,
        )
        pause = random.uniform(pause / 2, pause)  # workers hit by one failover spread out
        self._failures += 1
        log.warning("%s: %s; retrying in %.1fs", self.what, fault, pause)
        time.sleep(pause)
