"""Counters in the cache (Redis when configured) for login attempts and API key
request rates. A cache outage never locks anyone out or stops ingestion: the
limits fail open and log."""

import hashlib
import logging
import time
import unicodedata

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)


def _incr(key: str, ttl: int) -> int | None:
    try:
        if cache.add(key, 1, ttl):
            return 1
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, ttl)
        return 1
    except Exception:  # noqa: BLE001 — fail open when the cache is down
        logger.warning("rate-limit cache unavailable", exc_info=True)
        return None


def _get(key: str) -> int:
    try:
        return int(cache.get(key) or 0)
    except Exception:  # noqa: BLE001
        logger.warning("rate-limit cache unavailable", exc_info=True)
        return 0


# --- login --------------------------------------------------------------------


def login_name(username: str) -> str:
    """The name a login pause is kept under: the username as the login forms
    authenticate it (NFKC, surrounding blanks removed, as Django's
    ``UsernameField`` cleans it), case-folded. So ``" ana"``, ``"ana "``,
    ``"ＡＮＡ"`` and ``"Ana"`` share one pause."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


def _login_keys(username: str, ip: str | None) -> list[str]:
    # Hashed: any text fits a cache key that way.
    name = hashlib.sha256(login_name(username).encode()).hexdigest()
    return [f"login-fail:user:{name}:{ip}", f"login-fail:ip:{ip}"]


def login_locked(*, username: str, ip: str | None) -> bool:
    """Too many recent failures for this username from this address, or from this
    address altogether (ten times the per-user allowance)."""
    per_user, per_ip = _login_keys(username, ip)
    limit = settings.LOGIN_MAX_FAILURES
    return _get(per_user) >= limit or _get(per_ip) >= limit * 10


def login_failed(*, username: str, ip: str | None) -> None:
    for key in _login_keys(username, ip):
        _incr(key, settings.LOGIN_LOCKOUT_SECONDS)


def login_succeeded(*, username: str, ip: str | None) -> None:
    try:
        cache.delete(_login_keys(username, ip)[0])
    except Exception:  # noqa: BLE001
        logger.warning("rate-limit cache unavailable", exc_info=True)


# --- API keys -------------------------------------------------------------------


def key_request_allowed(*, prefix: str, bucket: str) -> tuple[bool, int]:
    """One more request for this key on this endpoint in the current minute?
    Returns (allowed, seconds until the minute ends)."""
    limit = settings.INGEST_REQUESTS_PER_MINUTE
    now = time.time()
    window = int(now // 60)
    retry_after = max(1, 60 - int(now % 60))
    if limit <= 0:
        return True, 0
    count = _incr(f"rate:{bucket}:{prefix}:{window}", 120)
    return (count is None or count <= limit), retry_after
