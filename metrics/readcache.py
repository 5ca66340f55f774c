"""Rollup rows already read, kept in the process while they are unchanged.

A live window moves with the clock, but most of it is whole days and hours
whose rollup rows no longer change: the Overview of the last 30 days reads the
same few hundred rows, and their latency sketches, on every load and every poll.
Their totals are kept here, keyed by what was read (table, organisation, agent,
grouping, ranges), with a stamp of the rows: how many there are, the highest
id and the sum of their row versions (PostgreSQL's ``xmin``, which every update
of a row renews). A late trace for a past hour, a retraction, a rebuild — any
insert, update or delete of those rows — changes the stamp, and the rows are
read again; a stamp costs one aggregate over the rows' index entries and heap
tuples, not their sketches. SQLite (the embedded first-run default) reads the
rows every time."""

import threading
from collections import OrderedDict

from django.db import connection
from django.db.models import Count, IntegerField, Max, QuerySet, Sum
from django.db.models.expressions import RawSQL

ENTRIES = 16  # windows kept per process (an entry is a few hundred grouped totals)


class RollupReads:
    def __init__(self, entries: int = ENTRIES) -> None:
        self.entries = entries
        self._kept: OrderedDict[tuple, tuple[tuple, dict]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def enabled() -> bool:
        """Stamps need PostgreSQL's row versions; SQLite reads the rows every time."""
        return connection.vendor == "postgresql"

    @staticmethod
    def stamp_query(rows: QuerySet) -> QuerySet:
        """The stamp of ``rows`` (all of one organisation): one row, or none when there are no rows."""
        return (
            rows.order_by()
            .values("organisation_id")
            .annotate(
                n=Count("id"),
                last=Max("id"),
                versions=Sum(RawSQL("xmin::text::bigint", [], output_field=IntegerField())),
            )
        )

    @staticmethod
    def stamp_of(stamp_rows: list[dict]) -> tuple:
        """The stamp from what ``stamp_query`` returned."""
        return next(((r["n"], r["last"], r["versions"]) for r in stamp_rows), (0, None, None))

    def kept(self, key: tuple, stamp: tuple) -> dict | None:
        """The totals read for ``key`` while its rows had this stamp, if kept. The
        result is shared: callers merge it into totals of their own, never change it."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is None or kept[0] != stamp:
                return None
            self._kept.move_to_end(key)
            return kept[1]

    def keep(self, key: tuple, stamp: tuple, totals: dict) -> None:
        with self._lock:
            self._kept[key] = (stamp, totals)
            self._kept.move_to_end(key)
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


rollup_reads = RollupReads()
