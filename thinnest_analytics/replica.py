"""Reads from a streaming replica (``DATABASE_REPLICA_URL``, docs/operations.md).

Everything goes to the primary (``default``) unless a view or API handler that
only reads says otherwise with ``@replica_reads``: the dashboard's pages and the
analytics, traces, usage and audit read endpoints. The decision is made once,
per request, where the request enters; selectors stay the same functions
whoever calls them (alert evaluation calls them too, and reads the primary).

Inside a ``@replica_reads`` handler ``ReplicaRouter`` sends reads to the
replica, except reads inside a transaction on the primary, which stay with its
writes. Writes always go to the primary, migrations run there only.

The handler reads the primary instead when

- no replica is configured, or the replica alias is the primary's own database
  (Django's ``TEST: MIRROR`` makes it so in the test suite, whose transactions
  only the primary's connection sees);
- the browser made a change (a POST to a page) whose WAL position the replica
  has not replayed yet: read-your-writes for the person who just changed
  something (a signed cookie holds the position, for ``REPLICA_PIN_SECONDS`` at
  most);
- the replica cannot be reached, or a read on it failed (then for
  ``UNREACHABLE_RETRY_SECONDS``; the failed read is done again on the primary).

A replica that answers "not found" (a trace stored a moment ago) is asked
again on the primary, so an object is never missing only because of lag.
How far behind the replica is, ``replica_lag`` (``pg_last_xact_replay_timestamp``,
kept ``REPLICA_LAG_CACHE_SECONDS``), is set on the request: pages show it above
a threshold, and answers carry it in ``X-Replica-Lag-Seconds``.
"""

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.http import Http404, HttpRequest, HttpResponse

from .errors import ApiError

logger = logging.getLogger(__name__)

REPLICA = "replica"
LAG_HEADER = "X-Replica-Lag-Seconds"
PIN_COOKIE = "primary_reads"
_PIN_SALT = "thinnest.replica.pin"

_reading = contextvars.ContextVar("replica_reading", default=False)

# How far behind the replica is, in seconds: 0 when it has replayed all it has
# received (an idle primary sends nothing, so the age of the last replayed
# commit says nothing then); otherwise the age of the last commit it replayed.
# NULL when it has replayed no commit since it started: unknown.
_LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() IS NOT NULL
         AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
    ELSE greatest(0, extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()))::float8
END
"""


def replica_configured() -> bool:
    """A replica alias that is a database of its own (not the primary's, as a test mirror is)."""
    if REPLICA not in connections.settings:
        return False
    primary = connections[DEFAULT_DB_ALIAS].settings_dict
    replica = connections[REPLICA].settings_dict
    return any(primary.get(k) != replica.get(k) for k in ("ENGINE", "HOST", "PORT", "NAME"))


class ReplicaRouter:
    """Installed only when ``DATABASE_REPLICA_URL`` is set."""

    def db_for_read(self, model, **hints) -> str:
        if _reading.get() and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return REPLICA
        return DEFAULT_DB_ALIAS

    def db_for_write(self, model, **hints) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        return True  # one database, two copies

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool:
        return db == DEFAULT_DB_ALIAS


@dataclass(frozen=True)
class _Probe:
    at: float  # time.monotonic() of the probe
    available: bool
    lag: float | None


# A replica found unreachable is tried again after this long: a connection
# attempt can take DB_POOL_TIMEOUT, which requests should not pay every second.
UNREACHABLE_RETRY_SECONDS = 5.0

_probe: _Probe | None = None
_probing = threading.Lock()  # one probe at a time per process


def _still_fresh(kept: _Probe | None, now: float) -> bool:
    if kept is None:
        return False
    keep = settings.REPLICA_LAG_CACHE_SECONDS
    return now - kept.at < (keep if kept.available else max(keep, UNREACHABLE_RETRY_SECONDS))


def replica_lag_probe() -> tuple[bool, float | None]:
    """(reachable, lag in seconds or None when unknown), read at most every
    ``REPLICA_LAG_CACHE_SECONDS`` per process; while one request reads it, the
    others use the last reading."""
    global _probe
    kept = _probe
    if _still_fresh(kept, time.monotonic()):
        return kept.available, kept.lag
    if not _probing.acquire(blocking=kept is None):
        return kept.available, kept.lag
    try:
        try:
            with connections[REPLICA].cursor() as cursor:
                cursor.execute(_LAG_SQL)
                (lag,) = cursor.fetchone()
            _probe = _Probe(time.monotonic(), True, None if lag is None else float(lag))
        except (OperationalError, InterfaceError) as exc:
            replica_unreachable(exc)
    finally:
        _probing.release()
    return _probe.available, _probe.lag


def replica_unreachable(exc: Exception) -> None:
    """Read the primary instead for ``UNREACHABLE_RETRY_SECONDS``."""
    global _probe
    logger.warning("replica unreachable, reading the primary: %s", exc)
    connections[REPLICA].close()
    _probe = _Probe(time.monotonic(), False, None)


def _replayed(lsn: str) -> bool:
    """Whether the replica has replayed the primary's WAL up to ``lsn``."""
    with connections[REPLICA].cursor() as cursor:
        cursor.execute("SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", [lsn])
        return bool(cursor.fetchone()[0])


def _pinned(request: HttpRequest) -> bool:
    lsn = request.get_signed_cookie(
        PIN_COOKIE, default=None, salt=_PIN_SALT, max_age=settings.REPLICA_PIN_SECONDS
    )
    return lsn is not None and not _replayed(lsn)


def _on_primary(view: Callable[..., HttpResponse], request: HttpRequest, *args, **kwargs):
    request.read_replica = False
    request.replica_lag = None
    return view(request, *args, **kwargs)


def replica_reads(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Run a handler that only reads with its reads on the replica (see the module)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if request.method not in ("GET", "HEAD") or not replica_configured():
            return view(request, *args, **kwargs)
        try:
            available, lag = replica_lag_probe()
            if not available or _pinned(request):
                return _on_primary(view, request, *args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            replica_unreachable(exc)
            return _on_primary(view, request, *args, **kwargs)
        request.read_replica = True
        request.replica_lag = lag
        token = _reading.set(True)
        try:
            return view(request, *args, **kwargs)
        except (Http404, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status != 404:
                raise
            # Not on the replica yet, perhaps: the primary decides.
        except (OperationalError, InterfaceError) as exc:
            replica_unreachable(exc)
        finally:
            _reading.reset(token)
        return _on_primary(view, request, *args, **kwargs)

    return wrapped


def replica_pin_wanted(request: HttpRequest, response: HttpResponse) -> bool:
    """A change (a POST…) to a page from a browser, with a replica to read: pin it."""
    browser = (
        settings.SESSION_COOKIE_NAME in request.COOKIES or settings.SESSION_COOKIE_NAME in response.cookies
    )
    return (
        request.method not in ("GET", "HEAD", "OPTIONS", "TRACE")
        and not request.path.startswith("/api/")
        and browser
        and replica_configured()
    )


def replica_pin(response: HttpResponse) -> None:
    """After a browser's change, note the primary's WAL position in a signed
    cookie: that browser's replica reads go to the primary until the replica
    has replayed it."""
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            (lsn,) = cursor.fetchone()
    except (OperationalError, InterfaceError):
        return  # the primary is gone: nothing was written
    response.set_signed_cookie(
        PIN_COOKIE,
        lsn,
        salt=_PIN_SALT,
        max_age=settings.REPLICA_PIN_SECONDS,
        httponly=True,
        secure=settings.SESSION_COOKIE_SECURE,
        samesite="Lax",
    )


def replica_lag_header(request: HttpRequest, response: HttpResponse) -> None:
    """``X-Replica-Lag-Seconds`` on an answer read from the replica: its lag, or
    ``unknown`` while it has replayed no commit since it started."""
    if getattr(request, "read_replica", False):
        lag = request.replica_lag
        response[LAG_HEADER] = "unknown" if lag is None else f"{lag:.1f}"


def replica_lag_context(request: HttpRequest) -> dict:
    """Template context: the replica's lag when the page read it and it is over
    ``REPLICA_LAG_NOTICE_SECONDS``."""
    lag = getattr(request, "replica_lag", None)
    shown = lag is not None and lag > settings.REPLICA_LAG_NOTICE_SECONDS
    return {"replica_lag_seconds": lag if shown else None}
