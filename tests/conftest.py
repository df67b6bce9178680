"""Session-wide fixtures: real services (Azurite, the MongoDB sandbox) start once per session."""

import os

from hypothesis import settings

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.fault_proxy",
    "tests.fixtures.mongodb",
]

# CI must judge the change, not the luck of the draw: there, property tests use a fixed seed.
# Locally they explore new examples on every run (and Hypothesis keeps the failures it finds).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
