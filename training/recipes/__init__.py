"""Training recipes (one folder per bundled model)."""
