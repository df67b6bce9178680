"""The mirroring engine: MongoDB → Microsoft Fabric open-mirroring landing zone.

One sub-package or module per concern; nothing here imports Azure Functions.
"""

# The mirror's version, written into the landing zone's _partnerEvents.json. A constant, because
# the Functions package is shared/ without the project's metadata (no pyproject.toml, not
# pip-installed): tests/test_packaging.py keeps it equal to pyproject's [project] version and to
# the installed distribution's.
__version__ = "0.1.0"
