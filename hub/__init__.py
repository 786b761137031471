"""Maskwatch hub: ingest, registry, alerts, commands, API, CLI and dashboard (runs on a server)."""
