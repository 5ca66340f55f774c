"""An installation upgraded to partitioned storage shows exactly the figures it
showed before. The test is a real upgrade: the previous release's code (from
git) builds a scratch database and loads the demo organisation into it, and
dumps every figure (tests/figures.py); then this tree's ``migrate`` moves the
rows in small batches, is killed (SIGKILL) once a batch has moved, is run
again to the end, and the figures are dumped again. Each section of the two
dumps is compared on its own, so a failure names what changed."""

import contextlib
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from .conftest import postgres_only
from .figures import SECTIONS
from .processes import ROOT, app_env, current_database_url, stop

pytestmark = [pytest.mark.postgres, postgres_only(), pytest.mark.slow]

# The release before partitioned storage: the layout the upgrade starts from.
PREVIOUS_RELEASE = "9966e19"
# A week of demo traffic: about 4,700 traces, 8,000 steps and 1,450 scores.
SEED_DAYS = "7"
# Small batches, so the move takes many and the kill lands between two of them.
BATCH_SIZE = "300"
# What the move prints after each batch, and once at its end (agents 0014).
BATCH_MOVED = re.compile(r"moved [\d,]+ of [\d,]+ traces")
MOVE_FINISHED = re.compile(r"partitioned layout ready: [\d,]+ traces moved")
MIGRATE_TIMEOUT = 120
FIGURES = Path(__file__).resolve().parent / "figures.py"

KEY = """
from accounts.services import api_key_create, organisation_get_or_create
from audit.services import Actor
org = organisation_get_or_create(slug="demo")
print(api_key_create(organisation=org, name="upgrade check", scopes=["admin", "read"], actor=Actor.system("test")).raw_key)
"""


@dataclass
class Upgrade:
    # Out of the repr: a failing test's traceback shows the fixture.
    before: dict = field(repr=False)
    after: dict = field(repr=False)
    killed_after: str | None  # the batch line the first migrate was killed after
    first_migrate: str = field(repr=False)
    second_migrate: str = field(repr=False)


def _run(command: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=MIGRATE_TIMEOUT)
    assert done.returncode == 0, f"{command} in {cwd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _env(tree: Path, base: dict[str, str]) -> dict[str, str]:
    return {**base, "PYTHONPATH": str(tree)}


def _manage(tree: Path, env: dict[str, str], *args: str) -> str:
    return _run([sys.executable, "manage.py", *args], cwd=tree, env=_env(tree, env))


def _dump(tree: Path, env: dict[str, str], plan: Path, out: Path) -> dict:
    # -P: the script's own folder (this test suite) stays off sys.path, so its
    # modules never shadow the release's apps.
    _run([sys.executable, "-P", str(FIGURES), str(plan), str(out)], cwd=tree, env=_env(tree, env))
    return json.loads(out.read_text())


def _extract_previous_release(into: Path) -> None:
    archive = subprocess.Popen(["git", "archive", PREVIOUS_RELEASE], cwd=ROOT, stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    assert archive.wait(timeout=60) == 0, f"git archive {PREVIOUS_RELEASE} failed"
    assert untar.returncode == 0, untar.stderr


def _migrate_killed_after_a_batch(env: dict[str, str]) -> tuple[str | None, str]:
    """Run this tree's ``migrate`` and SIGKILL it as soon as it prints that a
    batch moved: (that line, or None if it ended without one; its output)."""
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=_env(ROOT, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    output = []
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"migrate printed no moved batch within {MIGRATE_TIMEOUT} s:\n{''.join(output)}")
            if line is None:
                assert proc.wait(timeout=30) == 0, f"migrate failed:\n{''.join(output)}"
                return None, "".join(output)
            output.append(line)
            if BATCH_MOVED.search(line):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return line.strip(), "".join(output)
    finally:
        stop(proc, sig=signal.SIGKILL)


def _windows(database_url: str) -> dict[str, list[str]]:
    """Fixed windows inside the demo data's span: whole days, whole hours, and
    edges in the middle of an hour (where raw rows are read)."""
    with psycopg.connect(database_url) as conn:
        first, last = conn.execute("SELECT min(created_at), max(created_at) FROM agents_trace").fetchone()
    hour = first.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0) + timedelta(days=1)
    assert day + timedelta(days=5) < last, (first, last)
    at = {
        "hour_aligned": (hour, last.astimezone(UTC).replace(minute=0, second=0, microsecond=0)),
        "whole_days": (day, day + timedelta(days=5)),
        "days_with_mid_hour_edges": (
            day + timedelta(hours=5, minutes=17, seconds=23.25),
            day + timedelta(days=4, hours=19, minutes=41, seconds=7.5),
        ),
        "hours_with_mid_hour_edges": (
            day + timedelta(days=2, hours=9, minutes=13, seconds=7),
            day + timedelta(days=2, hours=15, minutes=48, seconds=59),
        ),
        "across_midnight": (
            day + timedelta(days=1) - timedelta(hours=2, minutes=30, seconds=10),
            day + timedelta(days=1, hours=3, minutes=5, seconds=0.5),
        ),
        "inside_one_hour": (
            day + timedelta(days=3, hours=14, minutes=5),
            day + timedelta(days=3, hours=14, minutes=50),
        ),
        "before_the_data": (hour - timedelta(days=3), hour - timedelta(days=2)),
    }
    return {name: [_iso(start), _iso(end)] for name, (start, end) in at.items()}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def _scratch_database() -> Iterator[str]:
    """A database of its own beside the test database, dropped at the end."""
    server = current_database_url().rsplit("/", 1)[0]
    name = f"test_upgrade_{secrets.token_hex(4)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            # FORCE: a killed migrate's server process may still be on its way out.
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory) -> Iterator[Upgrade]:
    tmp = tmp_path_factory.mktemp("upgrade")
    previous = tmp / "previous"
    previous.mkdir()
    started = time.monotonic()

    def took(what: str) -> None:
        print(f"{time.monotonic() - started:6.1f} s  {what}")

    _extract_previous_release(previous)
    with _scratch_database() as database_url:
        env = app_env(
            DATABASE_URL=database_url,
            DJANGO_SETTINGS_MODULE="thinnest_analytics.settings",
            VAR_DIR=str(tmp / "var"),
            SECRET_KEY="upgrade-check",
            ALLOW_HTTP="true",
            PYTHONUNBUFFERED="1",  # progress lines arrive as they are printed
            PARTITION_MOVE_BATCH_SIZE=BATCH_SIZE,
        )
        _manage(previous, env, "migrate", "--no-input", "-v0")
        took(f"{PREVIOUS_RELEASE}: migrated")
        _manage(previous, env, "seed_demo", "--days", SEED_DAYS, "-v0")
        took(f"{PREVIOUS_RELEASE}: demo data loaded")
        key = _manage(previous, env, "shell", "-c", KEY).strip().splitlines()[-1]
        plan = tmp / "plan.json"
        windows = _windows(database_url)
        plan.write_text(
            json.dumps(
                {
                    "key": key,
                    "windows": windows,
                    "list_window": windows["days_with_mid_hour_edges"],
                    "sample_every": 50,
                }
            )
        )
        before = _dump(previous, env, plan, tmp / "before.json")
        took(f"{PREVIOUS_RELEASE}: figures dumped ({before['counts']})")

        killed_after, first = _migrate_killed_after_a_batch(env)
        took(f"this tree: migrate {'killed after ' + repr(killed_after) if killed_after else 'ended'}")
        second = _manage(ROOT, env, "migrate", "--no-input")
        took("this tree: migrate run again to the end")
        after = _dump(ROOT, env, plan, tmp / "after.json")
        took("this tree: figures dumped")
        yield Upgrade(before, after, killed_after, first, second)


def test_the_move_is_killed_after_a_batch_and_the_next_migrate_finishes_it(upgrade):
    assert upgrade.killed_after, f"migrate printed no moved batch:\n{upgrade.first_migrate}"
    # The rest was left to the second run: the kill landed in the middle of the move.
    assert BATCH_MOVED.search(upgrade.second_migrate), upgrade.second_migrate
    assert MOVE_FINISHED.search(upgrade.second_migrate), upgrade.second_migrate


def test_the_previous_release_dumped_a_few_thousand_traces_with_steps_and_scores(upgrade):
    counts = upgrade.before["counts"]
    assert counts["traces"] >= 3000 and counts["steps"] >= counts["traces"] and counts["scores"] > 0, counts


@pytest.mark.parametrize("section", SECTIONS)
def test_every_figure_is_the_same_after_the_upgrade(upgrade, section):
    before, after = upgrade.before[section], upgrade.after[section]
    if section == "row_checksums":
        # The new layout may add columns (a partition key); every old one must keep its values.
        after = {
            table: {c: after[table].get(c, "(column missing)") for c in before[table]} for table in before
        }
    differences = _differences(before, after, section)
    assert not differences, f"{len(differences)}+ differences in {section}:\n" + "\n".join(differences)


def _differences(before, after, path: str, found: list[str] | None = None, limit: int = 12) -> list[str]:
    """Where two dumps differ, as ``path: before != after`` lines (the first ``limit``)."""
    found = [] if found is None else found
    if len(found) >= limit:
        return found
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            if key not in after or key not in before:
                found.append(f"{path}.{key}: only {'before' if key in before else 'after'}")
            else:
                _differences(before[key], after[key], f"{path}.{key}", found, limit)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            named = f" {b['id']}" if isinstance(b, dict) and "id" in b else ""
            _differences(b, a, f"{path}[{i}{named}]", found, limit)
    elif before != after:
        shown = [json.dumps(v)[:300] for v in (before, after)]
        if isinstance(before, list):
            shown = [f"{len(before)} items", f"{len(after)} items"]
        found.append(f"{path}: {shown[0]} != {shown[1]}")
    return found[:limit]
