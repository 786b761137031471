"""Alembic migrations of the hub database, run by :meth:`hub.store.Store.migrate` on start."""
