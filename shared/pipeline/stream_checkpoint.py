"""Where a database's change stream resumes: one state record per database (kind ``stream``).

It is recorded *before* any table of the database is planned, so every table's snapshot starts
after it and the reader can replay each table's changes from it (see shared/pipeline/changes.py
for the window protocol and the lease the record also carries).
"""

from __future__ import annotations

from shared.pipeline.wiring import MirrorContext
from shared.source.change_stream import current_position
from shared.source.retry import Retrier
from shared.state.base import JsonObject, update

STREAM_KIND = "stream"


def ensure_checkpoint(ctx: MirrorContext, database: str) -> None:
    """Record the stream's start point for ``database`` unless one is recorded already."""
    if ctx.state.get(STREAM_KIND, database) is not None:
        return
    retrier = Retrier.for_settings(ctx.settings, f"starting the change stream of {database}")
    token = retrier.call(lambda: current_position(ctx.mongo[database]))

    def create(value: JsonObject | None) -> JsonObject:
        return value if value is not None else {"token": token, "start_after": False}

    update(ctx.state, STREAM_KIND, database, create)
