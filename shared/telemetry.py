"""Telemetry: OpenTelemetry metrics and logs to Application Insights, only when asked for.

With APPLICATIONINSIGHTS_CONNECTION_STRING set, ``enable`` configures azure-monitor-opentelemetry
(with the app's credential when it has one, so ingestion can be Entra-only) and creates the
instruments below; log records then carry their ``extra`` fields (table, window) as dimensions.
Off, nothing is imported (the distro takes about two seconds to import) and ``record`` is a
dictionary lookup that finds nothing. Attributes are database and table names only: never a URI,
a key or a document value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

METER_NAME = "mongo_fabric_mirror"
# name: (kind, unit, description)
INSTRUMENTS = {
    "change_events": ("counter", "{event}", "Change events read from MongoDB"),
    "rows_published": ("counter", "{row}", "Rows published in landing-zone files"),
    "files_published": ("counter", "{file}", "Data files published to the landing zone"),
    "lag_seconds": ("histogram", "s", "From the change in MongoDB to its file being published"),
    "rebuilds": ("counter", "{rebuild}", "Tables rebuilt (cause as an attribute)"),
    "errors": ("counter", "{error}", "Failed windows, ticks and partitions"),
    "window_rereads": ("counter", "{window}", "Change windows read again after a failure"),
    "replicator_backlog": (
        "gauge",
        "{file}",
        "Files in a table folder the replicator has not processed yet (an upper bound)",
    ),
    "window_growth": ("gauge", "1", "How many times normal size change windows are (backpressure)"),
}
Recorder = Callable[[float, dict[str, str]], None]
_recorders: dict[str, Recorder] = {}


def enable(settings: Settings) -> bool:
    """Start exporting when APPLICATIONINSIGHTS_CONNECTION_STRING is set; True if exporting."""
    connection_string = settings.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if not connection_string or _recorders:
        return bool(_recorders)
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry.metrics import get_meter

    options: dict[str, object] = {"connection_string": connection_string, "logger_name": "shared"}
    if settings.auth.mode in ("managed-identity", "service-principal"):
        options["credential"] = settings.auth.credential()
    configure_azure_monitor(**options)
    meter = get_meter(METER_NAME)
    for name, (kind, unit, description) in INSTRUMENTS.items():
        full_name = f"mirror.{name}"
        if kind == "counter":
            _recorders[name] = meter.create_counter(full_name, unit, description).add
        elif kind == "gauge":  # the last value per table, not a sum
            _recorders[name] = meter.create_gauge(full_name, unit, description).set
        else:
            _recorders[name] = meter.create_histogram(full_name, unit, description).record
    log.info("telemetry: exporting metrics and logs to Application Insights")
    return True


def record(name: str, value: float, **attributes: str) -> None:
    """Add to a counter, a histogram, or set a gauge (no-op unless ``enable`` turned telemetry
    on)."""
    recorder = _recorders.get(name)
    if recorder is not None:
        recorder(value, attributes)
