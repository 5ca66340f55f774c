"""The load script, shortened to ten seconds, keeps itself honest: every
request answered, every trace sent stored once and counted in the rollups."""

import json
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from .conftest import postgres_only
from .processes import ROOT, app_env, current_database_url

pytestmark = [postgres_only(), pytest.mark.slow]


def test_a_short_load_run_loses_nothing(tmp_path):
    url = urlparse(current_database_url())
    load_url = url._replace(path=f"{url.path}_load").geturl()  # a throwaway database of its own
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--duration", "10", "--clients", "2", "--output", str(out)],
        cwd=ROOT,
        env=app_env(LOAD_DATABASE_URL=load_url, VAR_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert results["errors"] == 0
    assert results["traces_sent"] == results["traces_stored"] == results["traces_in_rollups"] > 0
    kinds = set(results["kinds"])
    assert {"ingest batch", "otlp export", "api summary", "page overview"} <= kinds
    assert "traces sent" in done.stdout
