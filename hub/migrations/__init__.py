"""Alembic migrations of the hub database, run by :meth:`hub.storage.database.Store.migrate` on start."""
