"""A MongoDB-compatible sandbox server speaking the MongoDB wire protocol.

This is a sandbox for trying and testing the mirror without a real MongoDB: an in-memory,
single-member "replica set" (or, with `routers`, a sharded cluster's routers in front of it)
that the real PyMongo and PyMongoArrow drivers talk to over TCP,
with change streams (resume tokens, invalidation, split large events), `_id`-only indexing,
a bounded oplog and `failCommand`-style fault injection. It is not a database: nothing is
persisted, there is no authentication, no transactions and no secondary index. Whatever it
does not implement is answered with an explicit error rather than silently approximated.

Modules: `server` (sockets, `SandboxServer`, `serve_forever`), `wire` (message framing),
`commands` (command dispatch), `storage` (collections), `query` (filters, updates, projections),
`aggregation` (pipeline stages), `ordering` (BSON cross-type order), `oplog` and
`change_streams` (events and resume tokens), `cursors`, `faults` and `errors`.
"""

from mongodb_sandbox.server import SandboxServer, serve_forever

__all__ = ["SandboxServer", "serve_forever"]
