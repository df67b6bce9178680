"""A replicator that behaves like Fabric's open-mirroring replicator, writing real Delta tables.

Fabric cannot run here; this is its stand-in for users (query the mirrored tables locally with
DuckDB, pandas or Spark) and for tests (the mirror must live with what the real one does to the
landing zone: moving, then deleting, the files it applied). See :mod:`shared.replicator.engine`.
"""
