"""Data: locating sources, reading tables, splitting rows."""
