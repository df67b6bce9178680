"""Session-wide fixtures: real services (Azurite, the MongoDB sandbox) start once per session."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.mongodb",
]
