"""The PostgreSQL events recorder: one round trip per save, dense ids in commit order, no edits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg.sql import SQL, Identifier, Literal

IMMUTABLE_MESSAGE = "promptrecord events are immutable"


def create_alone(recorder: PostgresAggregateRecorder, create: Callable[[], None]) -> None:
    """Run a recorder's table creation while no other process creates tables in its schema.

    Replicas starting together would otherwise race in the catalog (`CREATE OR REPLACE
    FUNCTION` and `CREATE TYPE` collide with "tuple concurrently updated" or a duplicate
    type). A session advisory lock, held on its own connection, serialises the whole
    creation, including the library's separate transaction for the composite type.
    """
    with recorder.datastore.get_connection() as conn:
        key = "promptrecord_create:" + str(recorder.datastore.schema)
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            create()
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


class PromptRecordRecorder(PostgresApplicationRecorder):
    """Inserts events through a server function that takes the table lock and numbers them.

    The stock function skips `LOCK TABLE`, so two concurrent saves may commit their
    notification ids out of order and a follower reading `id > position` would skip one.
    Taking the lock inside the function keeps ids in commit order and saves stay a single
    round trip.

    Ids are `max + 1` under that lock rather than the column's sequence: a sequence value
    is spent even when the save is refused (a concurrent change) or rolled back, so the log
    would have holes that look exactly like deleted events. Numbered under the lock, the log
    is dense, and `promptrecord verify` can treat every missing id as a deleted event.

    Triggers refuse UPDATE, DELETE and TRUNCATE on the events table: nothing is ever
    changed or removed. Snapshots are derived and stay writable.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema_name = self.datastore.schema
        schema = Identifier(schema_name)
        table = Identifier(self.events_table_name)
        qualified = Literal(f'"{schema_name}"."{self.events_table_name}"')
        function = Identifier("promptrecord_insert_" + self.events_table_name)
        self.pg_function_name_insert_events = "promptrecord_insert_" + self.events_table_name
        self.sql_invoke_pg_function_insert_events = SQL(
            "SELECT * FROM {schema}.{function}((%s))"
        ).format(schema=schema, function=function)
        self.sql_create_pg_function_insert_events = SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}(events {schema}.{event}[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
            "DECLARE last_id bigint; "
            "BEGIN "
            "  SET LOCAL lock_timeout = '{lock_timeout}s'; "
            "  LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "  SELECT COALESCE(MAX(notification_id), 0) INTO last_id FROM {schema}.{table}; "
            "  NOTIFY {channel}; "
            "  RETURN QUERY "
            "  WITH inserted AS ("
            "    INSERT INTO {schema}.{table} AS t "
            "      (originator_id, originator_version, topic, state, notification_id) "
            "    SELECT e.originator_id, e.originator_version, e.topic, e.state, last_id + e.n "
            "    FROM unnest(events) WITH ORDINALITY "
            "      AS e(originator_id, originator_version, topic, state, n) "
            "    RETURNING t.notification_id"
            "  ) SELECT inserted.notification_id FROM inserted "
            "  ORDER BY inserted.notification_id; "
            # The library's own insert path (no server function) draws from the sequence:
            # keep it past every id given out here, so that path cannot collide.
            "  PERFORM setval(pg_get_serial_sequence({qualified}, 'notification_id'), "
            "    last_id + cardinality(events)); "
            "END; $BODY$"
        ).format(
            schema=schema,
            function=function,
            event=Identifier(self.stored_event_type_name),
            table=table,
            channel=Identifier(self.channel_name),
            lock_timeout=self.datastore.lock_timeout,
            qualified=qualified,
        )
        index = self.create_insert_function_statement_index
        self.sql_create_statements[index] = self.sql_create_pg_function_insert_events
        self.sql_create_statements.extend(self._immutability_statements())

    def create_table(self) -> None:
        """Create types, tables, functions and triggers, one process at a time."""
        create_alone(self, super().create_table)

    def _immutability_statements(self) -> list[Any]:
        """A trigger function and the triggers that make the events table append-only.

        The triggers are created only when missing (checked in pg_trigger): dropping and
        re-creating them on every start would take an ACCESS EXCLUSIVE lock on the events
        table and stall every reader while a replica starts.
        """
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        function = Identifier("promptrecord_refuse_change")
        qualified = Literal(f'"{self.datastore.schema}"."{self.events_table_name}"')
        refuse = SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
            "LANGUAGE plpgsql AS $BODY$ "
            "BEGIN "
            "  RAISE EXCEPTION '{message}: % on %.% refused', "
            "    TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME "
            "    USING HINT = 'Nothing in the log is ever changed or removed: record a new "
            "event instead. promptrecord verify checks that the log is intact.'; "
            "END; $BODY$"
        ).format(schema=schema, function=function, message=SQL(IMMUTABLE_MESSAGE))
        statements: list[Any] = [refuse]
        triggers = (
            ("promptrecord_events_immutable", "UPDATE OR DELETE", "ROW"),
            ("promptrecord_events_no_truncate", "TRUNCATE", "STATEMENT"),
        )
        for name, operations, level in triggers:
            statements.append(
                SQL(
                    "DO $BODY$ BEGIN "
                    "  IF NOT EXISTS (SELECT 1 FROM pg_trigger "
                    "    WHERE tgrelid = {qualified}::regclass AND tgname = {name_literal}) THEN "
                    "    CREATE TRIGGER {name} BEFORE {operations} ON {schema}.{table} "
                    "    FOR EACH {level} EXECUTE FUNCTION {schema}.{function}(); "
                    "  END IF; "
                    # Two processes starting at once may both find it missing.
                    "EXCEPTION WHEN duplicate_object THEN NULL; "
                    "END $BODY$"
                ).format(
                    qualified=qualified,
                    name_literal=Literal(name),
                    name=Identifier(name),
                    operations=SQL(operations),
                    schema=schema,
                    table=table,
                    level=SQL(level),
                    function=function,
                )
            )
        return statements


class SnapshotRecorder(PostgresAggregateRecorder):
    """The snapshots table, created under the same lock as the events table."""

    def create_table(self) -> None:
        create_alone(self, super().create_table)


class PromptRecordFactory(PostgresFactory):
    """The library's PostgreSQL factory with our snapshot recorder (the events recorder is
    chosen by `APPLICATION_RECORDER_TOPIC`)."""

    aggregate_recorder_class = SnapshotRecorder
