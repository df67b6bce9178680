"""The MongoDB side: client, collection selection, `_id` partitioning, snapshot and change reads."""
