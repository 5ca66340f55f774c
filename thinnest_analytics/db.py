"""Set-based writes shared by ingestion and rollups: ``INSERT … ON CONFLICT``
statements fed by ``unnest()`` of one array per column on PostgreSQL (a short,
fixed statement whatever the row count) and by multi-row ``VALUES`` on SQLite."""

import json
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from django.db import connection, models

# Stay well under SQLite's and PostgreSQL's bound-parameter limits.
MAX_PARAMS = 30_000


def _preparers(model: type[models.Model], fields: Sequence[str]):
    """Per column, the conversion Django would apply before saving (or None)."""
    vendor = connection.vendor
    preps = []
    for name in fields:
        field = model._meta.get_field(name)
        needs = isinstance(field, models.JSONField) or (
            vendor == "sqlite" and isinstance(field, (models.DateTimeField, models.DecimalField))
        )
        preps.append((lambda v, f=field: f.get_db_prep_save(v, connection)) if needs else None)
    return preps


def _prepared_params(preps, part) -> list[Any]:
    params: list[Any] = []
    for row in part:
        for value, prep in zip(row, preps, strict=True):
            params.append(prep(value) if prep is not None and value is not None else value)
    return params


def _sources(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Iterator[tuple[str, list]]:
    """The row source of an INSERT, as (SQL, params), one or more chunks."""
    meta = model._meta
    if connection.vendor == "postgresql":
        selects, arrays, params = [], [], []
        for i, name in enumerate(fields):
            field = meta.get_field(name)
            values = [row[i] for row in rows]
            if isinstance(field, models.DecimalField):
                values = [None if v is None else Decimal(v) for v in values]  # arrays need one type
            if isinstance(field, models.JSONField):
                values = [None if v is None else json.dumps(v, cls=field.encoder) for v in values]
                arrays.append("%s::text[]")
                selects.append(f"u.c{i}::jsonb")
            else:
                arrays.append(f"%s::{field.db_type(connection)}[]")
                selects.append(f"u.c{i}")
            params.append(values)
        columns = ", ".join(f"c{i}" for i in range(len(fields)))
        yield f"SELECT {', '.join(selects)} FROM unnest({', '.join(arrays)}) AS u({columns})", params
        return
    preps = _preparers(model, fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    chunk = max(1, MAX_PARAMS // len(fields))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        yield f"VALUES {', '.join([placeholder] * len(part))}", _prepared_params(preps, part)


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
    qn = connection.ops.quote_name
    meta = model._meta
    columns = ", ".join(qn(meta.get_field(f).column) for f in fields)
    conflict = ", ".join(qn(meta.get_field(f).column) for f in conflict_fields)
    ret = ", ".join(qn(meta.get_field(f).column) for f in returning)
    out: list[tuple] = []
    with connection.cursor() as cursor:
        for source, params in _sources(model, fields, rows):
            cursor.execute(
                f"INSERT INTO {qn(meta.db_table)} ({columns}) {source} "
                f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {ret}",
                params,
            )
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
    qn = connection.ops.quote_name
    meta = model._meta
    table = qn(meta.db_table)
    fields = [*key_fields, *add_fields, *merge]
    columns = [qn(meta.get_field(f).column) for f in fields]
    keys = [qn(meta.get_field(f).column) for f in key_fields]
    updates = [
        f"{c} = {table}.{c} + EXCLUDED.{c}" for c in (qn(meta.get_field(f).column) for f in add_fields)
    ]
    for name, function in merge.items():
        c = qn(meta.get_field(name).column)
        updates.append(f"{c} = {function}({table}.{c}, EXCLUDED.{c})")
    with connection.cursor() as cursor:
        for source, params in _sources(model, fields, rows):
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) {source} "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}",
                params,
            )


def update_by_pk(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """``UPDATE … SET fields WHERE pk = …`` for each row (pk first, then ``fields``),
    sent as one pipelined batch."""
    if not rows:
        return
    qn = connection.ops.quote_name
    meta = model._meta
    sets = ", ".join(f"{qn(meta.get_field(f).column)} = %s" for f in fields)
    preps = _preparers(model, fields)
    params = [(*_prepared_params(preps, [row[1:]]), row[0]) for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {qn(meta.pk.column)} = %s", params)
