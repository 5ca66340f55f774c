"""Latency sketches take retractions: a count of -1 cancels a latency, a bucket
that comes to zero disappears, in Python and in the database function alike."""

import json

from django.db import connection

from metrics.sketch import bucket_of, merge_into, quantile, sketch_of


def _sql_merge(a: dict | None, b: dict | None) -> dict:
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT ta_sketch_merge(%s{cast}, %s{cast})",
            [json.dumps(a) if a is not None else None, json.dumps(b) if b is not None else None],
        )
        value = cursor.fetchone()[0]
    return json.loads(value) if isinstance(value, str) else value


def test_a_retraction_removes_the_bucket(db):
    stored = sketch_of([120, 120, 900])
    retract = {bucket_of(900): -1, bucket_of(40): 1}
    expected = sketch_of([120, 120, 40])
    assert merge_into(dict(stored), retract) == expected
    assert _sql_merge(stored, retract) == expected
    assert _sql_merge(sketch_of([5]), {bucket_of(5): -1}) == {}
    assert _sql_merge(None, sketch_of([5])) == sketch_of([5])


def test_quantiles_ignore_buckets_without_a_positive_count():
    sketch = {**sketch_of([100, 200, 300]), bucket_of(5000): 0}
    assert quantile(sketch, 1.0) == quantile(sketch_of([100, 200, 300]), 1.0)
    assert quantile(sketch, 0.5) == quantile(sketch_of([100, 200, 300]), 0.5)
    assert quantile({bucket_of(70): 0}, 0.5) is None
