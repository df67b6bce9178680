"""Pipeline steps shared by the two front doors (Functions triggers and the CLI)."""
