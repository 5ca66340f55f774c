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
from collections.abc import Callable

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
    def stamp(rows: QuerySet) -> tuple:
        return tuple(
            rows.aggregate(
                n=Count("id"),
                last=Max("id"),
                versions=Sum(RawSQL("xmin::text::bigint", [], output_field=IntegerField())),
            ).values()
        )

    def get(self, key: tuple, rows: QuerySet, read: Callable[[], dict]) -> dict:
        """What ``read()`` returns for ``rows``, from the last read when they are unchanged.
        The result is shared: callers merge it into totals of their own, never change it."""
        if connection.vendor != "postgresql":
            return read()
        stamp = self.stamp(rows)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == stamp:
                self._kept.move_to_end(key)
                return kept[1]
        fresh = read()
        with self._lock:
            self._kept[key] = (stamp, fresh)
            self._kept.move_to_end(key)
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)
        return fresh

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


rollup_reads = RollupReads()
