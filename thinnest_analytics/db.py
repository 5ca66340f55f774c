"""Set-based writes shared by ingestion and rollups, and reads compiled once
and sent together (``Compiled``, ``pipelined``).

On PostgreSQL, rows are first streamed with ``COPY`` into a temporary staging
table (formatted by psycopg's C code, several times faster than binding
parameters), then moved with one ``INSERT … SELECT … ON CONFLICT`` or
``UPDATE … FROM``. On SQLite the same statements read from multi-row
``VALUES``.
"""

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any

import msgspec
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection, connections, models, router, transaction
from django.db.models.query import ValuesIterable

# JSON columns are encoded by msgspec: several times faster than json.dumps, same documents.
_json_text = msgspec.json.Encoder().encode

# Stay well under SQLite's bound-parameter limit.
MAX_PARAMS = 30_000


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _columns(model: type[models.Model], fields: Sequence[str]) -> list[str]:
    return [model._meta.get_field(f).column for f in fields]


@contextmanager
def _staged(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> Iterator[str]:
    """PostgreSQL: COPY ``rows`` into a temporary table shaped like ``fields`` of
    ``model`` and yield its name; the table is emptied before each use and at commit.
    The COPY and the statement reading the stage share one transaction (opened
    here when the caller has none): in autocommit the rows would vanish between them."""
    import psycopg

    columns = _columns(model, fields)
    table = model._meta.db_table
    digest = hashlib.sha1(",".join(columns).encode()).hexdigest()[:8]
    stage = f"stage_{table}_{digest}"
    json_columns = {i for i, f in enumerate(fields) if isinstance(model._meta.get_field(f), models.JSONField)}
    with transaction.atomic(savepoint=False):
        connection.ensure_connection()
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            # One round trip; the DELETE is a no-op unless the table is reused in one transaction.
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT {', '.join(_qn(c) for c in columns)} FROM {_qn(table)} WITH NO DATA; "
                f"DELETE FROM {stage}"
            )
            with cursor.copy(f"COPY {stage} ({', '.join(_qn(c) for c in columns)}) FROM STDIN") as copy:
                for row in rows:
                    if json_columns:
                        row = [
                            _json_text(v).decode() if i in json_columns and v is not None else v
                            for i, v in enumerate(row)
                        ]
                    copy.write_row(row)
        yield stage


def _preparers(model: type[models.Model], fields: Sequence[str]):
    """SQLite: per column, the conversion Django applies before saving (or None)."""
    preps = []
    for name in fields:
        field = model._meta.get_field(name)
        needs = isinstance(field, (models.JSONField, models.DateTimeField, models.DecimalField))
        preps.append((lambda v, f=field: f.get_db_prep_save(v, connection)) if needs else None)
    return preps


def _values(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Iterator[tuple[str, list]]:
    """SQLite: ``VALUES (…), (…)`` chunks with their parameters."""
    preps = _preparers(model, fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    chunk = max(1, MAX_PARAMS // len(fields))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        params: list[Any] = []
        for row in part:
            for value, prep in zip(row, preps, strict=True):
                params.append(prep(value) if prep is not None and value is not None else value)
        yield f"VALUES {', '.join([placeholder] * len(part))}", params


def insert_ignore_conflicts(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict_fields: Sequence[str],
    returning: Sequence[str],
) -> list[tuple]:
    """Insert ``rows`` (tuples in ``fields`` order); rows that collide with an
    existing one on ``conflict_fields`` are skipped. Returns ``returning``
    columns of the rows actually inserted, which tells new rows from re-sends."""
    if not rows:
        return []
    table = _qn(model._meta.db_table)
    columns = ", ".join(_qn(c) for c in _columns(model, fields))
    tail = (
        f"ON CONFLICT ({', '.join(_qn(c) for c in _columns(model, conflict_fields))}) DO NOTHING "
        f"RETURNING {', '.join(_qn(c) for c in _columns(model, returning))}"
    )
    out: list[tuple] = []
    if connection.vendor == "postgresql":
        with _staged(model, fields, rows) as stage, connection.cursor() as cursor:
            # ORDER BY ctid keeps the caller's row order, so row locks are taken in key order.
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ORDER BY ctid {tail}"
            )
            return cursor.fetchall()
    with connection.cursor() as cursor:
        for source, params in _values(model, fields, rows):
            cursor.execute(f"INSERT INTO {table} ({columns}) {source} {tail}", params)
            out.extend(cursor.fetchall())
    return out


def insert_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    returning: Sequence[str],
) -> list[tuple]:
    """Insert ``rows`` (tuples in ``fields`` order), in order; returns their
    ``returning`` columns."""
    if not rows:
        return []
    table = _qn(model._meta.db_table)
    columns = ", ".join(_qn(c) for c in _columns(model, fields))
    tail = f"RETURNING {', '.join(_qn(c) for c in _columns(model, returning))}"
    if connection.vendor == "postgresql":
        with _staged(model, fields, rows) as stage, connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ORDER BY ctid {tail}"
            )
            return cursor.fetchall()
    out: list[tuple] = []
    with connection.cursor() as cursor:
        for source, params in _values(model, fields, rows):
            cursor.execute(f"INSERT INTO {table} ({columns}) {source} {tail}", params)
            out.extend(cursor.fetchall())
    return out


def upsert_add(
    model: type[models.Model],
    key_fields: Sequence[str],
    add_fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    merge: dict[str, str] | None = None,
) -> None:
    """Insert ``rows`` (key values, then ``add_fields`` values, then ``merge``
    values); where a row with the same key exists, add the values to it instead.
    ``merge`` maps further columns to the SQL function that combines old and new.
    Callers sort ``rows`` by key so concurrent writers lock rows in one order."""
    if not rows:
        return
    merge = merge or {}
    table = _qn(model._meta.db_table)
    fields = [*key_fields, *add_fields, *merge]
    columns = ", ".join(_qn(c) for c in _columns(model, fields))
    updates = [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in map(_qn, _columns(model, add_fields))]
    for name, function in merge.items():
        c = _qn(model._meta.get_field(name).column)
        updates.append(f"{c} = {function}({table}.{c}, EXCLUDED.{c})")
    tail = f"ON CONFLICT ({', '.join(_qn(c) for c in _columns(model, key_fields))}) DO UPDATE SET {', '.join(updates)}"
    if connection.vendor == "postgresql":
        with _staged(model, fields, rows) as stage, connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ORDER BY ctid {tail}"
            )
        return
    with connection.cursor() as cursor:
        for source, params in _values(model, fields, rows):
            cursor.execute(f"INSERT INTO {table} ({columns}) {source} {tail}", params)


def update_by_pk(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Set ``fields`` on the rows whose primary key comes first in each row."""
    if not rows:
        return
    table = _qn(model._meta.db_table)
    pk = _qn(model._meta.pk.column)
    if connection.vendor == "postgresql":
        with _staged(model, [model._meta.pk.name, *fields], rows) as stage, connection.cursor() as cursor:
            sets = ", ".join(f"{c} = s.{c}" for c in map(_qn, _columns(model, fields)))
            cursor.execute(f"UPDATE {table} SET {sets} FROM {stage} s WHERE {table}.{pk} = s.{pk}")
        return
    preps = _preparers(model, fields)
    sets = ", ".join(f"{_qn(c)} = %s" for c in _columns(model, fields))
    params = [
        [
            *(p(v) if p is not None and v is not None else v for v, p in zip(row[1:], preps, strict=True)),
            row[0],
        ]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {sets} WHERE {pk} = %s", params)


async def in_worker_thread(fn, /, **kwargs):
    """Run a database-heavy call on a worker thread of its own, so concurrent
    requests overlap (Django runs synchronous views one at a time under ASGI).
    The thread's connections (primary, replica) go back to their pools when
    the call returns.
    With ``DB_WORKER_THREADS`` off (tests inside one transaction), the call runs
    on Django's usual thread."""
    if not settings.DB_WORKER_THREADS:
        return await sync_to_async(fn)(**kwargs)

    def run():
        try:
            return fn(**kwargs)
        finally:
            for opened in connections.all(initialized_only=True):
                opened.close()

    return await sync_to_async(run, thread_sensitive=False)()


def on_worker_thread(view: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a synchronous view into an async one that runs it with
    ``in_worker_thread``: a slow read then no longer holds up the other requests
    of its process. The view must return plain data or a finished response
    (nothing that queries lazily once it has returned)."""

    @wraps(view)
    async def wrapped(*args, **kwargs):
        return await in_worker_thread(partial(view, *args, **kwargs))

    return wrapped


def delete_in(model: type[models.Model], field: str, values: Sequence[Any], **where: Any) -> int:
    """``DELETE`` the rows whose ``field`` is one of ``values`` (and that match
    ``where``), one statement per chunk, without Django's cascade collector:
    callers delete dependent rows themselves, in the same transaction. Returns
    the number of rows deleted."""
    deleted = 0
    values = list(values)
    for start in range(0, len(values), MAX_PARAMS // 2):
        chunk = values[start : start + MAX_PARAMS // 2]
        deleted += model._base_manager.filter(**{f"{field}__in": chunk}, **where)._raw_delete(
            connection.alias
        )
    return deleted


class Compiled:
    """A read compiled to SQL once, run again with other values.

    It is compiled with stand-in values (``stand_ins``: value → slot name) for
    what changes from run to run — an organisation's id, the instants of a
    window, the ids of the rows a writer touched — which ``bound`` replaces with
    the real ones; the rest of its parameters are kept as compiled. Building and
    compiling a queryset of aggregates costs about a millisecond of Python,
    often more than PostgreSQL takes to run it. Its rows come converted as
    Django converts them: dicts for a ``.values()`` queryset, tuples (as
    ``.values_list()`` gives them) for any other."""

    def __init__(
        self, qs: models.QuerySet, stand_ins: dict[Any, Any] | None = None, *, using: str | None = None
    ) -> None:
        stand_ins = stand_ins or {}
        query = qs.query
        self.model = qs.model
        self.compiler = query.get_compiler(using=using or qs.db)
        try:
            self.sql, params = self.compiler.as_sql()
        except EmptyResultSet:  # .none() or ``pk__in=[]``: no rows, nothing to send
            self.sql, params = None, ()
        self.names = (
            list(query.selected)
            if query.selected
            else [*query.extra_select, *query.values_select, *query.annotation_select]
        )
        self.as_dicts = issubclass(qs._iterable_class, ValuesIterable)
        self.slots = [_slot_of(p, stand_ins) for p in params]
        self.params = list(params)
        self.converters = None
        if self.sql is not None:
            fields = [s[0] for s in self.compiler.select[0 : self.compiler.col_count]]
            self.converters = self.compiler.get_converters(fields)

    def bound(self, values: dict[Any, Any] | None = None) -> "Bound":
        """This read with each stand-in's slot taken from ``values``."""
        if values is None:
            return Bound(self, self.params)
        params = [
            p if slot is None else values[slot] for p, slot in zip(self.params, self.slots, strict=True)
        ]
        return Bound(self, params)

    def rows(self, fetched: list[tuple]) -> list:
        if self.converters:
            fetched = self.compiler.apply_converters(fetched, self.converters)
        if not self.as_dicts:
            return [tuple(row) for row in fetched] if self.converters else list(fetched)
        names = self.names
        indexes = range(len(names))
        return [{names[i]: row[i] for i in indexes} for row in fetched]


def _slot_of(param: Any, stand_ins: dict[Any, Any]) -> Any:
    try:
        return stand_ins.get(param)
    except TypeError:  # unhashable: never a stand-in
        return None


@dataclass(frozen=True, slots=True)
class Bound:
    """A compiled read with the parameters of one run."""

    read: Compiled
    params: list


Step = models.QuerySet | Bound | tuple[str, Sequence[Any]]


def pipelined(
    steps: Sequence[Step], *, using: str | None = None, prepare: bool | None = None
) -> list[list | None]:
    """Run ``steps`` in order: reads (querysets, or compiled reads bound to
    their values), whose rows come back as ``list(queryset)`` gives them, and
    statements (SQL and parameters), which return None. On PostgreSQL they
    travel together, in one round trip (psycopg pipeline mode), bound on the
    server; elsewhere one after another. Each shows in ``connection.queries``
    when queries are logged.

    ``using`` names the database; without it, the steps must all be reads and go
    where the router sends a read of the first one's rows (the replica, inside a
    handler that reads it; docs/operations.md). ``prepare=True`` prepares each
    statement at once; by default psycopg prepares one it has run a few times
    on a connection."""
    if not steps:
        return []
    if using is None:
        if not all(isinstance(step, models.QuerySet | Bound) for step in steps):
            raise ValueError("statements that write name their database (using=)")
        first = steps[0]
        using = router.db_for_read(first.model if isinstance(first, models.QuerySet) else first.read.model)
    connection = connections[using]
    bound = [
        Compiled(step, using=using).bound() if isinstance(step, models.QuerySet) else step for step in steps
    ]
    if connection.vendor != "postgresql":
        return [_run_one(connection, step) for step in bound]
    import time

    import psycopg

    sent = [
        (i, step) for i, step in enumerate(bound) if not isinstance(step, Bound) or step.read.sql is not None
    ]
    results: list[list | None] = [[] for _ in bound]
    if not sent:
        return results
    started = time.monotonic()
    connection.ensure_connection()
    raw = connection.connection
    with connection.wrap_database_errors, ExitStack() as stack:
        cursors = [stack.enter_context(psycopg.Cursor(raw)) for _ in sent]
        with raw.pipeline():
            for cursor, (_, step) in zip(cursors, sent, strict=True):
                cursor.execute(*_sql_of(step), prepare=prepare)
        for cursor, (i, step) in zip(cursors, sent, strict=True):
            results[i] = step.read.rows(cursor.fetchall()) if isinstance(step, Bound) else None
        if connection.queries_logged:
            took = f"{(time.monotonic() - started) / len(sent):.3f}"
            with psycopg.ClientCursor(raw) as literal:
                for _, step in sent:
                    connection.queries_log.append({"sql": literal.mogrify(*_sql_of(step)), "time": took})
    return results


def _sql_of(step: Bound | tuple[str, Sequence[Any]]) -> tuple[str, Sequence[Any]]:
    return (step.read.sql, step.params) if isinstance(step, Bound) else step


def _run_one(connection, step: Bound | tuple[str, Sequence[Any]]) -> list | None:
    if isinstance(step, Bound) and step.read.sql is None:
        return []
    with connection.cursor() as cursor:
        cursor.execute(*_sql_of(step))
        return step.read.rows(cursor.fetchall()) if isinstance(step, Bound) else None


class OneOf(models.Expression):
    """``field IN values`` with the values as one parameter, whatever their
    number: ``= ANY(%s)`` on PostgreSQL, ``IN (SELECT value FROM json_each(%s))``
    on SQLite. The statement's text stays the same for every batch (psycopg
    parses and the server plans it once), and Django does not prepare each value
    on its own. For integer keys: ``filter(OneOf("pk", ids))``."""

    output_field = models.BooleanField()
    conditional = True

    def __init__(self, field: str, values: Sequence[int]) -> None:
        super().__init__()
        self.column = models.F(field)
        self.values = values

    def get_source_expressions(self):
        return [self.column]

    def set_source_expressions(self, exprs) -> None:
        (self.column,) = exprs

    def as_sql(self, compiler, connection):
        sql, params = compiler.compile(self.column)
        if connection.vendor == "postgresql":
            return f"{sql} = ANY(%s::bigint[])", (*params, self.values)
        return f"{sql} IN (SELECT value FROM json_each(%s))", (
            *params,
            _json_text(list(self.values)).decode(),
        )
