"""Interlink: integrations between business systems, declared once and run on Prefect."""
