"""One change reader as a real process, for the freeze tests: it takes the database's lease and
reads windows until the stream is idle, without planning or snapshotting anything, so a test
decides exactly which tables are planned, snapshotting or unknown while the reader runs.

    python -m tests.pipeline.reader_child   (settings from the environment, as for `run`)

Exit 0 when drained, 3 when superseded (another reader took over; it must have changed nothing).
"""

from __future__ import annotations

import os
import sys

from shared.config import load_settings
from shared.landing_zone.publisher import Superseded
from shared.pipeline.changes import ChangeReader
from shared.pipeline.wiring import open_context

SUPERSEDED_EXIT = 3


def main() -> int:
    settings = load_settings(os.environ)
    ctx = open_context(settings)
    reader = ChangeReader(ctx, settings.require("MONGODB_DATABASE"), settings.collections())
    try:
        reader.acquire()
        while not reader.window().idle:
            pass
        reader.release()
    except Superseded as error:
        print(f"superseded: {error}", file=sys.stderr)
        return SUPERSEDED_EXIT
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
