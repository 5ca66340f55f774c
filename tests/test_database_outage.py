"""With the database unreachable, clients get 503 with Retry-After, not a crash."""

import json

import pytest

from .processes import app_env, daphne, free_port, http

pytestmark = pytest.mark.slow


def test_an_unreachable_database_is_answered_503(tmp_path):
    env = app_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere",
        VAR_DIR=str(tmp_path),
        DB_POOL_TIMEOUT="1",  # how long a request waits for a connection before the 503
    )
    with daphne(env, tmp_path) as base:
        status, headers, content = http(
            "POST",
            f"{base}/api/traces",
            {"agent_id": "agent_abc123", "input": "hi"},
            {"Authorization": "Bearer ta_abcd1234_secret"},
        )
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert json.loads(content)["error"]["code"] == "database_unavailable"
        status, headers, _ = http("GET", f"{base}/healthz")
        assert status == 503 and headers["Retry-After"] == "5"
