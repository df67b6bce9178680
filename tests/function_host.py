"""The registered Functions, indexed once for every test module.

The Functions host cannot run here (its installer downloads a binary), so tests call the user
functions directly. ``get_functions()`` indexes the bindings the way the host does, and may run
only once per app object: ``REGISTERED`` keeps what it returned (bindings included) and
``FUNCTIONS`` the user function of each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azure.functions.decorators.function_app import Function

from function_app import app

REGISTERED: dict[str, Function] = {
    function.get_function_name(): function for function in app.get_functions()
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: function.get_user_function() for name, function in REGISTERED.items()
}
