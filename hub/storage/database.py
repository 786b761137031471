"""The hub database: engine, migrations, transactions, counters and retention.

SQLite files are opened in WAL mode (readers never block the writer) with
``synchronous=FULL``, so a committed batch survives a crash of the hub or of the
machine. Any other SQLAlchemy URL (PostgreSQL...) works the same way.

Example::

    store = Store("sqlite:///maskwatch.db")
    store.migrate()            # logs "upgrading database ..." and creates/upgrades the schema
    with store.transaction() as session:
        store.count(session, {"rejected.json": 1})
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, delete, event, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from hub.storage.rows import AlertRow, Base, CounterRow, EventMessage, EventRow, RejectedRow, SnapshotRow
from shared.errors import ConfigError, MaskwatchError
from shared.messages import utc_now

log = logging.getLogger(__name__)

MIGRATIONS = "hub:migrations"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store:
    """Owns the SQLAlchemy engine of the hub database.

    :param url: SQLAlchemy URL, e.g. ``sqlite:///maskwatch.db`` or
        ``postgresql+psycopg2://postgres@127.0.0.1/maskwatch``.
    :raises ConfigError: the URL cannot be parsed or its driver is missing.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True)
        except Exception as exc:  # ArgumentError, NoSuchModuleError, ImportError of a driver
            raise ConfigError(f"db_url {url!r} is not usable: {exc}") from None
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            database = self.engine.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> str:
        """Create or upgrade the schema to the newest Alembic revision; return that revision.

        :raises MaskwatchError: the database cannot be reached or upgraded.
        """
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.set_main_option(
            "sqlalchemy.url", self.engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
        head = ScriptDirectory.from_config(config).get_current_head() or "base"
        try:
            return self._upgrade(config, head)
        except SQLAlchemyError as exc:
            raise MaskwatchError(f"cannot open or upgrade the database {self.safe_url}: {exc}") from None

    def _upgrade(self, config: Config, head: str) -> str:
        with self.engine.begin() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            if current == head:
                log.info("database %s is up to date (revision %s)", self.safe_url, head)
                return head
            log.info("upgrading database %s from revision %s to %s", self.safe_url, current or "(empty)", head)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        return head

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def session(self) -> Session:
        """A new session (use as a context manager) for reads."""
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def insert(self, table: Table | type[Base]) -> Any:
        """A dialect-specific ``INSERT`` that supports ``on_conflict_do_*``."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise ConfigError(f"database {self.dialect!r} is not supported: use SQLite or PostgreSQL")

    def count(self, session: Session, increments: Mapping[str, int]) -> None:
        """Add ``increments`` to the named counters."""
        rows = [{"name": name, "value": value} for name, value in sorted(increments.items()) if value]
        if rows:
            session.connection().execute(self._count_upsert, rows)

    @cached_property
    def _count_upsert(self) -> Any:
        table = CounterRow.__table__
        stmt = self.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.name], set_={"value": table.c.value + stmt.excluded.value}
        )

    def counters(self, prefix: str = "") -> dict[str, int]:
        """Current counter values whose names start with ``prefix``."""
        with self.session() as session:
            rows = session.execute(
                select(CounterRow.name, CounterRow.value).where(CounterRow.name.startswith(prefix))
            ).all()
        return {name: int(value) for name, value in rows}

    def prune(self, days: float, snapshot_dir: Path, *, now: datetime | None = None) -> dict[str, int]:
        """Delete events (with raw messages and snapshots), alerts and rejected payloads older than ``days``.

        Age is by the hub's clock (``received_at``, alerts' ``ts``), never the node's: an event a node
        stamped 1970 is kept as long as any other, one stamped 2999 goes when it is ``days`` old.
        Snapshot files are removed after the rows are committed. Returns the number of rows deleted per table.
        """
        cutoff = (now or utc_now()) - timedelta(days=days)
        with self.transaction() as session:
            old_ids = select(EventRow.id).where(EventRow.received_at < cutoff)
            files = list(
                session.scalars(
                    select(SnapshotRow.path).where(
                        (SnapshotRow.received_at < cutoff) | SnapshotRow.event_id.in_(old_ids)
                    )
                )
            )
            connection = session.connection()  # a Connection's DML result has a rowcount
            deleted = {
                "event_messages": connection.execute(
                    delete(EventMessage).where(EventMessage.event_id.in_(old_ids))
                ).rowcount,
                "snapshots": connection.execute(
                    delete(SnapshotRow).where((SnapshotRow.received_at < cutoff) | SnapshotRow.event_id.in_(old_ids))
                ).rowcount,
                "events": connection.execute(delete(EventRow).where(EventRow.received_at < cutoff)).rowcount,
                "alerts": connection.execute(delete(AlertRow).where(AlertRow.ts < cutoff)).rowcount,
                "rejected": connection.execute(delete(RejectedRow).where(RejectedRow.received_at < cutoff)).rowcount,
            }
        for relative in files:
            (snapshot_dir / relative).unlink(missing_ok=True)
        log.info("pruned data older than %s days: %s", days, deleted)
        return deleted

    def require_schema(self) -> None:
        """Check that the database already holds the hub schema (the CLI reads, it never creates).

        :raises MaskwatchError: it does not exist, holds no hub data, or cannot be opened.
        """
        url = self.engine.url
        if (
            url.get_backend_name() == "sqlite"
            and url.database not in (None, "", ":memory:")
            and not Path(url.database).exists()
        ):  # connecting would create an empty file
            raise MaskwatchError(f"no hub database at {url.database}: give --db, or start 'maskwatch hub' first")
        try:
            if not inspect(self.engine).has_table("events"):
                raise MaskwatchError(f"{self.safe_url} holds no hub data: start 'maskwatch hub' on it first")
        except SQLAlchemyError as exc:
            raise MaskwatchError(f"cannot open the database {self.safe_url}: {exc}") from None

    def ping(self) -> None:
        """Run ``SELECT 1``; raises whatever the database or driver raises when it does not answer."""
        with self.session() as session:
            session.execute(text("SELECT 1"))

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()
