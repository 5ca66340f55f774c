"""The product's settings, for tests: the test client and the live server speak
plain HTTP, so no secure-only cookies or HTTPS redirect. Under pytest-xdist each
worker has a test database of its own (pytest-django names it) and a Redis
database of its own (below), so channel groups, throttles and queues of two
workers never meet; servers a test starts inherit the worker's ``REDIS_URL``."""

import os
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("ALLOW_HTTP", "true")


def _redis_url_of_worker(url: str, worker: str) -> str:
    """``redis://host:6379/0`` for worker ``gw1`` becomes ``…/1``: the worker's
    number added to the database number (Redis has 16)."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    db = (base + int(worker.removeprefix("gw"))) % 16
    return urlunsplit(parts._replace(path=f"/{db}"))


if os.getenv("REDIS_URL") and os.getenv("PYTEST_XDIST_WORKER"):
    os.environ["REDIS_URL"] = _redis_url_of_worker(os.environ["REDIS_URL"], os.environ["PYTEST_XDIST_WORKER"])

from thinnest_analytics.settings import *  # noqa: E402, F403
