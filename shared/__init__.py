"""The mirroring engine: MongoDB → Microsoft Fabric open-mirroring landing zone.

One sub-package or module per concern; nothing here imports Azure Functions.
"""
