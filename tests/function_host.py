"""The registered Functions, indexed once for every test module.

The Functions host cannot run here (its installer downloads a binary), so tests call the user
functions directly. ``get_functions()`` indexes the bindings the way the host does, and may run
only once per app object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from function_app import app

FUNCTIONS: dict[str, Callable[..., Any]] = {
    function.get_function_name(): function.get_user_function() for function in app.get_functions()
}
