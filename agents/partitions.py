"""Daily time partitions of the raw tables on PostgreSQL.

Traces are partitioned by ``created_at``, their steps and scores by the trace's
``created_at`` (``trace_created_at``), one partition per UTC day each
(``agents_trace_p20261202``…), so a trace, its steps and its scores live in
partitions of the same day and leave together. Why daily: retention then drops
whole days and deletes rows only in the day the horizon falls in, and a window
query reads the days it covers (the planner prunes the rest: docs/operations.md
shows the plans); a month would leave up to a month of rows to delete one by
one at the horizon.

Partitions are created ahead by the beat schedule (``partitions_ahead``) and,
for a day nothing created yet (a late or back-dated trace), by the writer
before it writes (``partitions_ensure``). Creating one never blocks readers or
writers: the table is created on its own and attached (``ATTACH PARTITION``
takes a lock that reads and inserts do not conflict with), from a connection
of its own, so a writer's transaction never holds that lock. There is no
default partition: a row for a day without one would be an error, not a row in
a table retention cannot drop.

Dropping a day detaches its partitions ``CONCURRENTLY`` (queries running on
them finish first) and drops them. SQLite, the embedded default, keeps plain
tables: every function here does nothing there.
"""

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from django.db import connection, transaction

from metrics.windows import retention_horizon

DAY = timedelta(days=1)
# How many days ahead the beat schedule creates partitions.
DAYS_AHEAD = 7
# Serialises partition creation between processes (an arbitrary constant).
_LOCK_KEY = 7_240_612_001


@dataclass(frozen=True)
class Partitioned:
    table: str
    key: str  # the column partitions are ranges of
    # Unique constraints over the partitions (they must hold the key), created
    # on the partitioned table in place of the plain table's.
    unique: tuple[tuple[str, tuple[str, ...]], ...] = ()


TRACES = Partitioned("agents_trace", "created_at")
STEPS = Partitioned("agents_tracestep", "trace_created_at")
SCORES = Partitioned("agents_score", "trace_created_at")
RAW_TABLES = (TRACES, STEPS, SCORES)
# Every table with daily partitions: the raw tables, and tables of apps above
# that keep rows per trace day (they add themselves from ``AppConfig.ready``).
PARTITIONED: list[Partitioned] = list(RAW_TABLES)

# Days known to have their partitions, per database (tests and tools may use
# several databases in one process).
_known_days: dict[tuple, set[date]] = {}
_known_lock = threading.Lock()
_partitioned: set[tuple] = set()


def _database() -> tuple:
    settings = connection.settings_dict
    return (settings["HOST"], settings["PORT"], settings["NAME"])


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_of(moment: datetime) -> date:
    """The UTC day a moment falls in (the day of its partition)."""
    return moment.astimezone(UTC).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def partitioned() -> bool:
    """Whether the raw tables are partitioned (PostgreSQL, once migrated)."""
    if connection.vendor != "postgresql":
        return False
    if _database() not in _partitioned:
        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [TRACES.table])
            row = cursor.fetchone()
        if not (row and row[0]):
            return False  # not cached: the upgrade may be about to run
        _partitioned.add(_database())
    return True


def _own_connection() -> psycopg.Connection:
    """A connection of its own, in autocommit: partitions are created and
    detached outside the caller's transaction."""
    params = connection.get_connection_params()
    keep = ("dbname", "user", "password", "host", "port", "sslmode", "options", "connect_timeout")
    return psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if k in keep and v})


def _attached(cursor, table: str) -> set[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s)",
        [table],
    )
    return {name for (name,) in cursor.fetchall()}


def _absent(cursor, days: set[date]) -> set[date]:
    """Of these days, those a partitioned table has no partition for."""
    cursor.execute(
        "SELECT p.relname, c.relname FROM pg_class p LEFT JOIN pg_inherits i ON i.inhparent = p.oid "
        "LEFT JOIN pg_class c ON c.oid = i.inhrelid WHERE p.relkind = 'p' AND p.relname = ANY(%s)",
        [[spec.table for spec in PARTITIONED]],
    )
    rows = cursor.fetchall()
    tables = {parent for parent, _ in rows}
    have = {name for _, name in rows if name}
    return {day for day in days if any(partition_name(t, day) not in have for t in tables)}


def _create(cursor, days: Iterable[date]) -> None:
    cursor.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
    try:
        for spec in PARTITIONED:
            if _relkind(cursor, spec.table) != "p":
                continue  # not partitioned yet: its migration creates its partitions
            attached = _attached(cursor, spec.table)
            for day in sorted(set(days)):
                name = partition_name(spec.table, day)
                if name in attached:
                    continue
                # Created on its own, then attached: CREATE TABLE … PARTITION OF
                # would lock the whole table against readers and writers.
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} "
                    f"(LIKE {spec.table} INCLUDING DEFAULTS INCLUDING STORAGE)"
                )
                # Bounds are written out: DDL takes no parameters.
                cursor.execute(
                    f"ALTER TABLE {spec.table} ATTACH PARTITION {name} FOR VALUES "
                    f"FROM ('{day_start(day).isoformat()}') TO ('{day_start(day + DAY).isoformat()}')"
                )
    finally:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])


def partitions_ensure(*, moments: Iterable[datetime]) -> None:
    """Make sure the days of these moments have their partitions, before rows
    of those days are written. Free once a day is known to this process: a
    day retention may drop (at most a day younger than the horizon) is looked
    up in the catalogue each time instead, as another process may drop it."""
    if connection.vendor != "postgresql":
        return
    days = {day_of(m) for m in moments}
    horizon = retention_horizon()
    droppable = day_of(horizon) + DAY if horizon is not None else date.min
    with _known_lock:
        known = _known_days.get(_database(), set())
        missing = {day for day in days if day <= droppable or day not in known}
    if not missing or not partitioned():
        return
    with connection.cursor() as cursor:
        absent = _absent(cursor, missing)
    if absent:
        with _own_connection() as own, own.cursor() as cursor:
            _create(cursor, absent)
    with _known_lock:
        _known_days.setdefault(_database(), set()).update(day for day in missing if day > droppable)


def partitions_ahead(*, now: datetime, days: int = DAYS_AHEAD) -> int:
    """Create the partitions of yesterday, today and the next ``days`` days
    (the beat schedule runs this daily). Returns how many days it covered."""
    today = day_of(now)
    partitions_ensure(moments=[day_start(today + DAY * n) for n in range(-1, days + 1)])
    return days + 2


def partition_days() -> list[date]:
    """The days that have a partition of any partitioned table, oldest first:
    attached, or left behind detached by a drop that was interrupted (dropping
    the day again removes it)."""
    if not partitioned():
        return []
    name = re.compile(r"^(?:{})_p(\d{{8}})$".format("|".join(re.escape(spec.table) for spec in PARTITIONED)))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = current_schema()::regnamespace AND relname ~ %s",
            [name.pattern],
        )
        days = {name.match(relname).group(1) for (relname,) in cursor.fetchall()}
    return sorted(datetime.strptime(day, "%Y%m%d").date() for day in days)


def partitions_drop(*, day: date) -> None:
    """Detach the day's partitions without blocking queries (``CONCURRENTLY``:
    queries reading them finish first), then drop them. Rows other tables keep
    for them (keys, conversations, received spans) are the caller's."""
    with _own_connection() as own, own.cursor() as cursor:
        for spec in PARTITIONED:
            name = partition_name(spec.table, day)
            if name in _attached(cursor, spec.table):
                try:
                    cursor.execute(f"ALTER TABLE {spec.table} DETACH PARTITION {name} CONCURRENTLY")
                except psycopg.errors.ObjectNotInPrerequisiteState:
                    # An earlier detach was interrupted half-way: finish it.
                    cursor.execute(f"ALTER TABLE {spec.table} DETACH PARTITION {name} FINALIZE")
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
    with _known_lock:
        _known_days.get(_database(), set()).discard(day)


# --- The upgrade from plain tables ---------------------------------------------

UNPARTITIONED = "_unpartitioned"
MOVE_BATCH_SIZE = 5_000


def _relkind(cursor, table: str) -> str | None:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return row[0] if row else None


def _columns(cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def _partitioned_table(cursor, spec: Partitioned) -> None:
    """Turn ``spec.table`` into a partitioned table of the same columns, indexes
    and id sequence; the plain table, renamed ``…_unpartitioned``, keeps its
    rows until they are moved. One transaction: either both exist or neither."""
    old = spec.table + UNPARTITIONED
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary",
        [spec.table],
    )
    indexes = cursor.fetchall()
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [spec.table])
    (sequence,) = cursor.fetchone()
    cursor.execute("SELECT coalesce(max(id), 0) FROM " + spec.table)
    (last_id,) = cursor.fetchone()
    cursor.execute(f"ALTER TABLE {spec.table} RENAME TO {old}")
    for name, _ in indexes:
        cursor.execute(f"ALTER INDEX {name} RENAME TO {name[:50]}_unpart")
    cursor.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {spec.table}_pkey TO {old}_pkey")
    if sequence:
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {old}_id_seq")
    cursor.execute(
        f"CREATE TABLE {spec.table} (LIKE {old} INCLUDING DEFAULTS INCLUDING STORAGE) "
        f"PARTITION BY RANGE ({spec.key})"
    )
    cursor.execute(f"ALTER TABLE {spec.table} ALTER COLUMN {spec.key} SET NOT NULL")
    cursor.execute(f"ALTER TABLE {spec.table} ADD CONSTRAINT {spec.table}_pkey PRIMARY KEY (id, {spec.key})")
    cursor.execute(f"CREATE SEQUENCE {spec.table}_id_seq OWNED BY {spec.table}.id")
    cursor.execute(f"SELECT setval('{spec.table}_id_seq', %s, %s)", [max(last_id, 1), last_id > 0])
    cursor.execute(f"ALTER TABLE {spec.table} ALTER COLUMN id SET DEFAULT nextval('{spec.table}_id_seq')")
    for _, definition in indexes:
        cursor.execute(definition)


# One batch: the oldest traces by id, with their steps, scores and keys.
_MOVE = """
WITH traces AS (
    DELETE FROM agents_trace_unpartitioned
    WHERE id IN (SELECT id FROM agents_trace_unpartitioned ORDER BY id LIMIT %(n)s)
    RETURNING *
),
moved AS (INSERT INTO agents_trace ({traces}) SELECT {traces} FROM traces),
keys AS (
    INSERT INTO agents_tracekey (organisation_id, public_id, created_at)
    SELECT organisation_id, public_id, created_at FROM traces
),
steps AS (
    DELETE FROM agents_tracestep_unpartitioned s USING traces t WHERE s.trace_id = t.id
    RETURNING s.*, t.created_at AS of_trace
),
moved_steps AS (
    INSERT INTO agents_tracestep ({steps_in}) SELECT {steps_out} FROM steps
),
scores AS (
    DELETE FROM agents_score_unpartitioned s USING traces t WHERE s.trace_id = t.id RETURNING s.*
),
moved_scores AS (INSERT INTO agents_score ({scores}) SELECT {scores} FROM scores)
SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM steps), (SELECT count(*) FROM scores)
"""


def _moving_days(cursor, n: int) -> list[datetime]:
    cursor.execute(
        "SELECT DISTINCT date_trunc('day', created_at, 'UTC') FROM "
        "(SELECT created_at FROM agents_trace_unpartitioned ORDER BY id LIMIT %s) b",
        [n],
    )
    return [day for (day,) in cursor.fetchall()]


def layout_upgrade(
    *, batch_size: int = MOVE_BATCH_SIZE, progress: Callable[[int, int, int, int], None] | None = None
) -> dict[str, int]:
    """Move an installation's raw tables into the partitioned layout: rename
    the plain tables, create partitioned ones in their place, and move the rows
    over ``batch_size`` traces per transaction (each trace with its steps,
    scores and key), oldest id first. Resumable: stopped at any point, it goes
    on from the rows still in the plain tables. ``progress(traces_moved,
    traces_total, steps_moved, scores_moved)`` after each batch. Returns the
    rows moved. Nothing to do on SQLite or once done."""
    moved = {"traces": 0, "steps": 0, "scores": 0}
    if connection.vendor != "postgresql":
        return moved
    with transaction.atomic(), connection.cursor() as cursor:
        for spec in RAW_TABLES:
            if _relkind(cursor, spec.table) == "r":
                _partitioned_table(cursor, spec)
    _forget_days()
    with connection.cursor() as cursor:
        if _relkind(cursor, TRACES.table + UNPARTITIONED) is None:
            return moved
        cursor.execute(f"SELECT count(*) FROM {TRACES.table}{UNPARTITIONED}")
        (total,) = cursor.fetchone()
        step_columns = _columns(cursor, STEPS.table)
        sql = _MOVE.format(
            traces=", ".join(_columns(cursor, TRACES.table)),
            steps_in=", ".join(step_columns),
            steps_out=", ".join("of_trace" if c == STEPS.key else c for c in step_columns),
            scores=", ".join(_columns(cursor, SCORES.table)),
        )
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            days = _moving_days(cursor, batch_size)
            if not days:
                break
            partitions_ensure(moments=days)
            cursor.execute(sql, {"n": batch_size})
            traces, steps, scores = cursor.fetchone()
        moved["traces"] += traces
        moved["steps"] += steps
        moved["scores"] += scores
        if progress is not None:
            progress(moved["traces"], total, moved["steps"], moved["scores"])
    with transaction.atomic(), connection.cursor() as cursor:
        # Scores are moved with their traces; one whose trace is gone goes by
        # its own time. Steps always leave with their trace.
        cursor.execute(f"SELECT DISTINCT trace_created_at FROM {SCORES.table}{UNPARTITIONED}")
        orphans = [t for (t,) in cursor.fetchall()]
        if orphans:
            partitions_ensure(moments=orphans)
            columns = ", ".join(_columns(cursor, SCORES.table))
            cursor.execute(
                f"INSERT INTO {SCORES.table} ({columns}) SELECT {columns} FROM {SCORES.table}{UNPARTITIONED}"
            )
            moved["scores"] += cursor.rowcount
        for spec in RAW_TABLES:
            cursor.execute(f"DROP TABLE {spec.table}{UNPARTITIONED}")
    return moved


def table_partition(spec: Partitioned) -> None:
    """Make a new, empty table of an app's partitioned (by day, like the raw
    tables), with partitions for the days the traces have. Nothing on SQLite."""
    if connection.vendor != "postgresql":
        return
    with transaction.atomic(), connection.cursor() as cursor:
        if _relkind(cursor, spec.table) == "p":
            return
        cursor.execute(f"SELECT EXISTS (SELECT FROM {spec.table})")
        if cursor.fetchone()[0]:
            raise ValueError(f"{spec.table} has rows: only an empty table is partitioned in place")
        _partitioned_table(cursor, spec)
        cursor.execute(f"DROP TABLE {spec.table}{UNPARTITIONED}")
    _forget_days()
    days = partition_days()
    if days:
        partitions_ensure(moments=[day_start(day) for day in days])


def _forget_days() -> None:
    """Forget the days known to have partitions: a table was just partitioned."""
    with _known_lock:
        _known_days.pop(_database(), None)
