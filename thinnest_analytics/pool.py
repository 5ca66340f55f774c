"""The health check of the PostgreSQL connection pool (settings ``DATABASES``)."""

from psycopg_pool import ConnectionPool


def pool_check(conn) -> None:
    """Check a pooled connection before it is handed out. When one fails, the
    database restarted since it was opened, and so did every idle connection
    opened before: drop them all at once (the pool opens new ones) instead of
    finding them one at a time while a request waits."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        from django.db import connections

        connections["default"].pool.drain()
        raise
