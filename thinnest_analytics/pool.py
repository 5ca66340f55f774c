"""The health check of the PostgreSQL connection pools (settings ``DATABASES``)."""

from collections.abc import Callable

from psycopg_pool import ConnectionPool


def pool_check(alias: str) -> Callable:
    """The check of a pooled connection of ``alias`` before it is handed out.
    When one fails, the database restarted since it was opened, and so did
    every idle connection opened before: drop them all at once (the pool opens
    new ones) instead of finding them one at a time while a request waits."""

    def check(conn) -> None:
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            from django.db import connections

            connections[alias].pool.drain()
            raise

    return check
