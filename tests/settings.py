"""The product's settings, for tests: the test client and the live server speak
plain HTTP, so no secure-only cookies or HTTPS redirect."""

import os

os.environ.setdefault("ALLOW_HTTP", "true")

from thinnest_analytics.settings import *  # noqa: E402, F403
