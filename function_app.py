"""Azure Functions front door (Python v2 programming model).

Each trigger parses its input, calls one engine function from ``shared/`` and maps the result;
the engine knows nothing about Functions. Settings come from app settings (see
local.settings.json.example) and are validated on every invocation's first use.
"""

from __future__ import annotations

import json
import logging
import os

import azure.functions as func

from shared.config import load_settings
from shared.errors import ConfigError, MirrorError
from shared.pipeline.inspect import inspect_landing_zone, report_to_json
from shared.pipeline.wiring import open_landing_zone_store

app = func.FunctionApp()
log = logging.getLogger("mongo_fabric_mirror")


def _json(body: object, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@app.route(route="landing-zone/inspect", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def inspect(req: func.HttpRequest) -> func.HttpResponse:
    """Check the landing zone against the Fabric contract; 200 if every table conforms, else 409."""
    table = req.params.get("table") or None
    try:
        store = open_landing_zone_store(load_settings(os.environ))
        reports = inspect_landing_zone(store, table)
    except ConfigError as error:
        log.error("configuration error: %s", error)
        return _json({"error": f"configuration error: {error}"}, 500)
    except MirrorError as error:
        return _json({"error": str(error)}, 404 if table else 500)
    conforms = all(report.conforms for report in reports)
    return _json(
        {"conforms": conforms, "tables": [report_to_json(r) for r in reports]},
        200 if conforms else 409,
    )
