"""Mergeable latency sketches (DDSketch-style logarithmic buckets).

A latency ``x`` ms > 0 falls in bucket ``ceil(ln(x) / ln(GAMMA))``, which covers
``(GAMMA**(i-1), GAMMA**i]``; a bucket is reported as ``2*GAMMA**i / (GAMMA+1)``,
within ``ALPHA`` relative error of every value in it. Zero latencies have a
bucket of their own. A sketch is a plain ``{bucket: count}`` dict (JSON in the
rollup tables), so merging is adding counts — the same on every resolution.

ALPHA is 0.9 % so that a value on a bucket edge, which floating point may put on
either side, still lands within 1 % of the exact value.
"""

import math
from collections.abc import Iterable, Mapping

ALPHA = 0.009
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
ZERO = "z"

Sketch = dict[str, int]


def bucket_of(latency_ms: float) -> str:
    """The bucket key of one latency (the SQL functions mirror this exactly)."""
    if latency_ms <= 0:
        return ZERO
    return str(math.ceil(math.log(latency_ms) / LN_GAMMA))


def bucket_value(key: str) -> float:
    if key == ZERO:
        return 0.0
    return 2 * GAMMA ** int(key) / (GAMMA + 1)


def sketch_of(latencies: Iterable[float]) -> Sketch:
    out: Sketch = {}
    for x in latencies:
        key = bucket_of(x)
        out[key] = out.get(key, 0) + 1
    return out


def merge_into(acc: Sketch, other: Mapping[str, int] | None) -> Sketch:
    """Add ``other``'s counts to ``acc``. A retracted latency (a trace derived
    again from more of its spans) is a count of -1; a bucket whose count comes to
    zero is dropped, so a sketch never holds empty buckets (and into an empty
    ``acc`` the counts are simply copied)."""
    if not other:
        return acc
    if not acc:
        acc.update(other)
        return acc
    get = acc.get  # called for every bucket: looked up once
    for key, count in other.items():
        total = get(key, 0) + count
        if total:
            acc[key] = total
        else:
            acc.pop(key, None)
    return acc


def _order(key: str) -> float:
    return -math.inf if key == ZERO else int(key)


def quantile_at_rank(sketch: Mapping[str, int], rank: int) -> float | None:
    """The value of the ``rank``-th smallest latency (1-based), within ALPHA."""
    seen = 0
    last = None
    for key in sorted(sketch, key=_order):
        if sketch[key] <= 0:
            continue
        seen += sketch[key]
        last = key
        if seen >= rank:
            return bucket_value(key)
    return bucket_value(last) if last is not None else None


def quantile(sketch: Mapping[str, int], q: float) -> float | None:
    """The value at rank ``ceil(q * n)`` (PostgreSQL's ``percentile_disc``), within
    ALPHA; None for an empty sketch. Buckets without a positive count are ignored."""
    n = sum(c for c in sketch.values() if c > 0)
    if n <= 0:
        return None
    return quantile_at_rank(sketch, max(1, math.ceil(q * n)))


# SQL twins of bucket_of and merge_into, installed on PostgreSQL by a migration
# and registered as Python functions on SQLite connections (dashboard.apps).
POSTGRES_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION ta_latency_bucket(x double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN x <= 0 THEN '{ZERO}' ELSE ceil(ln(x) / {LN_GAMMA!r}::double precision)::bigint::text END
$$;
CREATE OR REPLACE FUNCTION ta_sketch_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  -- Walk only the (small) new sketch; keys of the stored one are looked up.
  -- Buckets whose count comes to zero (a retracted latency) are removed.
  SELECT (coalesce(a, '{{}}'::jsonb) || coalesce(m.merged, '{{}}'::jsonb)) - coalesce(m.emptied, '{{}}'::text[])
  FROM (
    SELECT jsonb_object_agg(key, n) FILTER (WHERE n <> 0) AS merged,
           array_agg(key) FILTER (WHERE n = 0) AS emptied
    FROM (SELECT key, value::bigint + coalesce((a ->> key)::bigint, 0) AS n FROM jsonb_each_text(b)) AS sums
  ) AS m
$$;
"""
