"""The SQL of the PostgreSQL execution store: its tables and triggers, and its statements
composed once per schema."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from psycopg import sql

from promptrecord.projections.executions import (
    EXECUTION_COLUMNS,
    EXECUTIONS_TABLE,
    FEEDBACK_TABLE,
    IMMUTABLE_MESSAGE,
    ROLLUP_SUMS,
    ROLLUPS_TABLE,
    SCORES_TABLE,
)

KEY_COLUMNS = "workspace, prompt, version, environment, hour"
# The tenant index's text columns compare bytewise: under the database's collation each of the
# ~10 comparisons a row's insertion makes goes through strcoll (1.5-2.5 ms of a 1,000-row COPY).
# Equality, all the queries ask of them, is the same under either.
BYTEWISE = ' COLLATE "C"'
# A rollup row's latency histogram: its non-empty buckets in order, and their counts.
LATENCY_COLUMNS = (
    "latency_buckets integer[] NOT NULL DEFAULT '{}', latency_counts bigint[] NOT NULL DEFAULT '{}'"
)
# The stored histogram `r` and a batch's `excluded` merged: counts of a bucket in both added.
MERGE_LATENCY = (
    "SELECT coalesce(array_agg(m.bucket ORDER BY m.bucket), '{}'), "
    "coalesce(array_agg(m.count ORDER BY m.bucket), '{}') FROM (SELECT bucket, "
    "sum(count)::bigint AS count FROM (SELECT * FROM unnest(r.latency_buckets, r.latency_counts) "
    "UNION ALL SELECT * FROM unnest(excluded.latency_buckets, excluded.latency_counts)) "
    "AS u(bucket, count) GROUP BY bucket) AS m"
)
COLUMN_TYPES = {
    "started_at": "timestamptz NOT NULL",
    "id": "uuid NOT NULL",
    "workspace": f"text{BYTEWISE} NOT NULL",
    "prompt": "text NOT NULL",
    "version": "integer NOT NULL",
    "environment": "text NOT NULL",
    "tenant": f"text{BYTEWISE}",
    "request_id": "text",
    "resolve_reason": "text",
    "model": "text",
    "provider": "text",
    "latency_ms": "double precision NOT NULL",
    "tokens_in": "bigint NOT NULL",
    "tokens_out": "bigint NOT NULL",
    "cost_usd": "double precision",
    "status": "text NOT NULL",
    "error": "text",
    "score": "double precision",
    "input": "jsonb",
    "output": "text",
    "metadata": "jsonb",
    "sample": "double precision NOT NULL",
    "received_at": "timestamptz NOT NULL",
}
COLUMNS_DDL = ", ".join(f"{name} {COLUMN_TYPES[name]}" for name in EXECUTION_COLUMNS)
# Binary COPY: the server reads each field as its column's type, so none is parsed from text.
COPY_TYPES = [
    COLUMN_TYPES[name].removesuffix(" NOT NULL").removesuffix(BYTEWISE)
    for name in EXECUTION_COLUMNS
]
COLUMN_LIST = sql.SQL(", ".join(EXECUTION_COLUMNS))
REFUSE_CHANGE = "promptrecord_refuse_execution_change"
STAGING_TABLE = "promptrecord_executions_staging"


class Statements:
    """The SQL of one schema, composed once."""

    def __init__(self, schema: str) -> None:
        self.schema_name = schema
        executions = self.table(EXECUTIONS_TABLE)
        # Straight into the table: the fast path, for a batch none of which is stored yet.
        self.copy_executions = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            executions, COLUMN_LIST
        )
        # The path of a retried batch: staged, then inserted where the key is new.
        self.create_staging = sql.SQL(
            "CREATE TEMPORARY TABLE {staging} (LIKE {executions}) ON COMMIT DROP"
        ).format(staging=sql.Identifier(STAGING_TABLE), executions=executions)
        self.copy_staging = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(STAGING_TABLE), COLUMN_LIST
        )
        self.insert_staged = sql.SQL(
            "INSERT INTO {executions} ({columns}) SELECT {columns} FROM {staging} "
            "ORDER BY id, started_at ON CONFLICT DO NOTHING RETURNING id::text, started_at"
        ).format(executions=executions, columns=COLUMN_LIST, staging=sql.Identifier(STAGING_TABLE))
        # One statement a batch: each rollup row with its sums and its latency histogram, the
        # histogram sent as three flat arrays (key's place, bucket, count) and gathered per
        # row here, then merged with the stored one by `MERGE_LATENCY` on conflict.
        self.upsert_rollup = sql.SQL(
            "INSERT INTO {table} AS r ({keys}, {sums}, latency_buckets, latency_counts) "
            "SELECT {k_keys}, {k_sums}, coalesce(h.buckets, '{{}}'), coalesce(h.counts, '{{}}') "
            "FROM unnest({arrays}) WITH ORDINALITY AS k({keys}, {sums}, n) LEFT JOIN ("
            "SELECT n, array_agg(bucket ORDER BY bucket) AS buckets, "
            "array_agg(count ORDER BY bucket) AS counts FROM unnest(%s::bigint[], "
            "%s::integer[], %s::bigint[]) AS b(n, bucket, count) GROUP BY n) AS h USING (n) "
            "ORDER BY n ON CONFLICT ({keys}) DO UPDATE SET {updates}, "
            "(latency_buckets, latency_counts) = ({merge})"
        ).format(
            table=self.table(ROLLUPS_TABLE),
            keys=sql.SQL(KEY_COLUMNS),
            sums=sql.SQL(", ".join(ROLLUP_SUMS)),
            k_keys=sql.SQL(", ".join(f"k.{n.strip()}" for n in KEY_COLUMNS.split(","))),
            k_sums=sql.SQL(", ".join(f"k.{n}" for n in ROLLUP_SUMS)),
            arrays=sql.SQL(
                "%s::text[], %s::text[], %s::integer[], %s::text[], %s::bigint[]"
                + ", %s::double precision[]" * len(ROLLUP_SUMS)
            ),
            updates=sql.SQL(", ".join(f"{n} = r.{n} + excluded.{n}" for n in ROLLUP_SUMS)),
            merge=sql.SQL(MERGE_LATENCY),
        )
        self.select_stored = sql.SQL(
            "SELECT id, workspace, prompt, version, environment, started_at FROM {} "
            "WHERE id = %s AND workspace = %s ORDER BY started_at LIMIT 1"
        ).format(executions)

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema_name, name)

    def partition(self, day: date) -> sql.Composed:
        """The executions of one UTC day (DDL: the bounds are literals, not parameters)."""
        start = datetime.combine(day, time(), UTC)
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {partition} PARTITION OF {parent} "
            "FOR VALUES FROM ({start}) TO ({end})"
        ).format(
            partition=self.table(f"{EXECUTIONS_TABLE}_{day:%Y%m%d}"),
            parent=self.table(EXECUTIONS_TABLE),
            start=sql.Literal(start),
            end=sql.Literal(start + timedelta(days=1)),
        )

    def schema(self) -> list[sql.Composed]:
        table = self.table
        executions = table(EXECUTIONS_TABLE)
        statements: list[sql.Composed] = [
            # The key leads with the id: the one index both keeps a retried execution out and
            # finds an execution by id (feedback, scores) across the day partitions.
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ({columns}, PRIMARY KEY (id, started_at)) "
                "PARTITION BY RANGE (started_at)"
            ).format(executions, columns=sql.SQL(COLUMNS_DDL)),
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (workspace, tenant, started_at) "
                "WHERE tenant IS NOT NULL"
            ).format(sql.Identifier(f"{EXECUTIONS_TABLE}_tenant"), executions),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (execution_id uuid NOT NULL, workspace text NOT "
                "NULL, rating text NOT NULL, comment text, created_at timestamptz NOT NULL)"
            ).format(table(FEEDBACK_TABLE)),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (execution_id)").format(
                sql.Identifier(f"{FEEDBACK_TABLE}_execution"), table(FEEDBACK_TABLE)
            ),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (execution_id uuid NOT NULL, source text NOT "
                "NULL, workspace text NOT NULL, score double precision NOT NULL, created_at "
                "timestamptz NOT NULL, PRIMARY KEY (execution_id, source))"
            ).format(table(SCORES_TABLE)),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (workspace text NOT NULL, prompt text NOT NULL, "
                "version integer NOT NULL, environment text NOT NULL, hour bigint NOT NULL, "
                "{sums}, {latency}, PRIMARY KEY ({keys}))"
            ).format(
                table(ROLLUPS_TABLE),
                sums=sql.SQL(
                    ", ".join(f"{n} double precision NOT NULL DEFAULT 0" for n in ROLLUP_SUMS)
                ),
                latency=sql.SQL(LATENCY_COLUMNS),
                keys=sql.SQL(KEY_COLUMNS),
            ),
            # Rollup tables made before the histogram moved into the row gain its columns.
            sql.SQL("ALTER TABLE {} {}").format(
                table(ROLLUPS_TABLE),
                sql.SQL(
                    ", ".join(
                        f"ADD COLUMN IF NOT EXISTS {column}"
                        for column in LATENCY_COLUMNS.split(", ")
                    )
                ),
            ),
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $BODY$ "
                "BEGIN RAISE EXCEPTION '{message}: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, "
                "TG_TABLE_NAME; END; $BODY$"
            ).format(table(REFUSE_CHANGE), message=sql.SQL(IMMUTABLE_MESSAGE)),
        ]
        for name in (EXECUTIONS_TABLE, FEEDBACK_TABLE, SCORES_TABLE):
            statements += self._append_only(name)
        return statements

    def _append_only(self, name: str) -> list[sql.Composed]:
        """Triggers refusing UPDATE, DELETE and TRUNCATE, created only when missing."""
        statements: list[sql.Composed] = []
        qualified = sql.Literal(f'"{self.schema_name}"."{name}"')
        for suffix, operations, level in (
            ("append_only", "UPDATE OR DELETE", "ROW"),
            ("no_truncate", "TRUNCATE", "STATEMENT"),
        ):
            trigger = f"{name}_{suffix}"
            statements.append(
                sql.SQL(
                    "DO $BODY$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = "
                    "{qualified}::regclass AND tgname = {literal}) THEN CREATE TRIGGER {trigger} "
                    "BEFORE {operations} ON {table} FOR EACH {level} EXECUTE FUNCTION "
                    "{function}(); END IF; EXCEPTION WHEN duplicate_object THEN NULL; END $BODY$"
                ).format(
                    qualified=qualified,
                    literal=sql.Literal(trigger),
                    trigger=sql.Identifier(trigger),
                    operations=sql.SQL(operations),
                    table=self.table(name),
                    level=sql.SQL(level),
                    function=self.table(REFUSE_CHANGE),
                )
            )
        return statements
