"""Connectors: one module per kind of system; they know systems, not flows."""
