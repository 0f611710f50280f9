"""Recipe of the bundled demo model (see __main__.py)."""
