"""Set-based writes shared by ingestion and rollups: multi-row
``INSERT … ON CONFLICT`` statements that read the same on PostgreSQL and SQLite."""

from collections.abc import Sequence
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
    columns = [meta.get_field(f).column for f in fields]
    conflict = [meta.get_field(f).column for f in conflict_fields]
    ret = [meta.get_field(f).column for f in returning]
    preps = _preparers(model, fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    chunk = max(1, MAX_PARAMS // len(fields))
    out: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            params = _prepared_params(preps, part)
            sql = (
                f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
                f"VALUES {', '.join([placeholder] * len(part))} "
                f"ON CONFLICT ({', '.join(qn(c) for c in conflict)}) DO NOTHING "
                f"RETURNING {', '.join(qn(c) for c in ret)}"
            )
            cursor.execute(sql, params)
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
    preps = _preparers(model, fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    chunk = max(1, MAX_PARAMS // len(fields))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([placeholder] * len(part))} "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}",
                _prepared_params(preps, part),
            )
