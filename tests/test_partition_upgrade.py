"""An installation upgraded to partitioned storage shows exactly the figures it
showed before. The test is a real upgrade: the previous release's code (from
git) builds a scratch database, loads the demo organisation into it, receives
OpenTelemetry traces over OTLP and compacts them (then a few of them receive a
late span, which makes their spans rows again), and dumps every figure
(tests/figures.py). Then this tree's ``migrate`` moves the rows in small
batches and is killed (SIGKILL) once a batch has moved; the next one is killed
in the middle of the packed spans' move (held at its second batch); the last
one finishes, and the figures are dumped again. Each section of the two dumps
is compared on its own, so a failure names what changed. Last, this tree
compacts the reopened traces, and their spans still read back as received."""

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
from .otel_traffic import traffic
from .processes import ROOT, app_env, current_database_url, stop, wait_until

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
# OpenTelemetry replies over five days of the demo's week (one in ten never gets its root).
OTEL_TRACES = 300
OTEL_DAYS = 5
# The packed spans' move goes by this many traces a batch; the kill lands after the first.
PACKED_BATCH_SIZE = 100
COMPACTED = re.compile(r"Compacted ([\d,]+) traces \(([\d,]+) spans\)")
# What compaction may change: the product traces it leaves alone.
COMPACTION_SECTIONS = ("otel_counts", "otel_spans")
# Every packed form in the partition of its trace's day (of its first span's
# arrival for a trace never derived), and flagged on its received trace.
MISPLACED_PACKED_SPANS = """
SELECT count(*) FROM otel_compactedspans c
JOIN otel_receivedtrace r ON r.organisation_id = c.organisation_id AND r.trace_id = c.trace_id
LEFT JOIN agents_tracekey k ON k.organisation_id = c.organisation_id AND k.public_id = 'otel-' || c.trace_id
WHERE c.created_at <> coalesce(k.created_at, r.first_received_at) OR NOT r.compacted
   OR c.tableoid::regclass::text <> 'otel_compactedspans_p' || to_char(c.created_at AT TIME ZONE 'UTC', 'YYYYMMDD')
"""

KEY = """
from accounts.services import api_key_create, organisation_get_or_create
from audit.services import Actor
org = organisation_get_or_create(slug="demo")
print(api_key_create(organisation=org, name="upgrade check", scopes=["admin", "read", "ingest"], actor=Actor.system("test")).raw_key)
"""


@dataclass
class Upgrade:
    # Out of the repr: a failing test's traceback shows the fixture.
    before: dict = field(repr=False)
    after: dict = field(repr=False)
    killed_after: str | None  # the batch line the first migrate was killed after
    first_migrate: str = field(repr=False)
    second_migrate: str = field(repr=False)
    # The packed forms moved when the third migrate was killed; its output and the last one's.
    packed_moved_before_kill: int
    third_migrate: str = field(repr=False)
    last_migrate: str = field(repr=False)
    old_compaction: str  # what the previous release's compact_spans said
    reopened: int  # traces that received something after it
    misplaced_packed_spans: int
    # This tree's compact_spans on the upgraded database, and the figures after it.
    new_compaction: str
    compacted: dict = field(repr=False)


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


def _send(tree: Path, env: dict[str, str], plan: Path, requests: list[dict], path: Path) -> None:
    path.write_text(json.dumps(requests))
    _run([sys.executable, "-P", str(FIGURES), "send", str(plan), str(path)], cwd=tree, env=_env(tree, env))


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


def _packed_move_killed_after_a_batch(env: dict[str, str], database_url: str) -> tuple[int, str]:
    """Run this tree's ``migrate`` with the packed spans' move held at its
    second batch (a received trace of that batch locked here) and SIGKILL it
    there: (the packed forms moved by then, its output)."""
    output = Path(env["VAR_DIR"]) / "third-migrate.log"
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url, autocommit=True) as watcher:
        # The row alone: FOR UPDATE with an OFFSET would lock the rows it skips too.
        locked = holder.execute(
            "SELECT id FROM otel_receivedtrace WHERE id = (SELECT id FROM otel_receivedtrace"
            " WHERE compacted_spans IS NOT NULL ORDER BY id OFFSET %s LIMIT 1) FOR UPDATE",
            (PACKED_BATCH_SIZE,),
        ).fetchone()
        assert locked, f"fewer than {PACKED_BATCH_SIZE + 1} packed traces: the move would take one batch"
        with output.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "migrate", "--no-input"],
                cwd=ROOT,
                env={**_env(ROOT, env), "PARTITION_MOVE_BATCH_SIZE": str(PACKED_BATCH_SIZE)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:

            def blocked_backend() -> int | None:
                assert proc.poll() is None, (
                    f"migrate ended without waiting for the locked trace:\n{output.read_text()}"
                )
                row = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (holder.info.backend_pid,),
                ).fetchone()
                return row and row[0]

            backend = wait_until(
                blocked_backend,
                timeout=MIGRATE_TIMEOUT,
                what="migrate waiting for the locked trace",
                log=output,
            )
            moved = watcher.execute("SELECT count(*) FROM otel_compactedspans").fetchone()[0]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            # Its server process would otherwise go on once the lock is let go.
            watcher.execute("SELECT pg_terminate_backend(%s)", (backend,))
        finally:
            stop(proc, sig=signal.SIGKILL)
        holder.rollback()
    return moved, output.read_text()


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
        # Inside the demo's days, so the windows above stay what they are.
        otel = traffic(
            start=datetime.fromisoformat(windows["whole_days"][0]), days=OTEL_DAYS, traces=OTEL_TRACES
        )
        _send(previous, env, plan, otel.first, tmp / "otel-first.json")
        old_compaction = _manage(previous, env, "compact_spans", "--older-than", "0").strip()
        _send(previous, env, plan, otel.late, tmp / "otel-late.json")
        took(f"{PREVIOUS_RELEASE}: OpenTelemetry traces received, compacted, {len(otel.reopened)} reopened")
        before = _dump(previous, env, plan, tmp / "before.json")
        took(f"{PREVIOUS_RELEASE}: figures dumped ({before['counts']}, {before['otel_counts']})")

        killed_after, first = _migrate_killed_after_a_batch(env)
        took(f"this tree: migrate {'killed after ' + repr(killed_after) if killed_after else 'ended'}")
        second = _manage(ROOT, env, "migrate", "--no-input", "otel", "0004_compacted_spans")
        took("this tree: migrate run again up to the packed spans' move")
        packed_moved, third = _packed_move_killed_after_a_batch(env, database_url)
        took(f"this tree: migrate killed in the packed spans' move ({packed_moved} moved)")
        last = _manage(ROOT, env, "migrate", "--no-input")
        took("this tree: migrate run again to the end")
        with psycopg.connect(database_url) as conn:
            misplaced = conn.execute(MISPLACED_PACKED_SPANS).fetchone()[0]
        after = _dump(ROOT, env, plan, tmp / "after.json")
        took("this tree: figures dumped")

        new_compaction = _manage(ROOT, env, "compact_spans", "--older-than", "0").strip()
        otel_plan = tmp / "otel-plan.json"
        otel_plan.write_text(json.dumps({**json.loads(plan.read_text()), "sections": COMPACTION_SECTIONS}))
        compacted = _dump(ROOT, env, otel_plan, tmp / "compacted.json")
        took(f"this tree: compacted ({new_compaction!r}), OpenTelemetry figures dumped")
        yield Upgrade(
            before,
            after,
            killed_after,
            first,
            second,
            packed_moved_before_kill=packed_moved,
            third_migrate=third,
            last_migrate=last,
            old_compaction=old_compaction,
            reopened=len(otel.reopened),
            misplaced_packed_spans=misplaced,
            new_compaction=new_compaction,
            compacted=compacted,
        )


def test_the_move_is_killed_after_a_batch_and_the_next_migrate_finishes_it(upgrade):
    assert upgrade.killed_after, f"migrate printed no moved batch:\n{upgrade.first_migrate}"
    # The rest was left to the second run: the kill landed in the middle of the move.
    assert BATCH_MOVED.search(upgrade.second_migrate), upgrade.second_migrate
    assert MOVE_FINISHED.search(upgrade.second_migrate), upgrade.second_migrate


def test_the_previous_release_dumped_a_few_thousand_traces_with_steps_and_scores(upgrade):
    counts = upgrade.before["counts"]
    assert counts["traces"] >= 3000 and counts["steps"] >= counts["traces"] and counts["scores"] > 0, counts


def test_the_packed_spans_move_is_killed_after_a_batch_and_the_next_migrate_finishes_it(upgrade):
    assert upgrade.packed_moved_before_kill == PACKED_BATCH_SIZE, upgrade.third_migrate
    assert "Applying otel.0005_compacted_spans_move..." in upgrade.third_migrate, upgrade.third_migrate
    assert "Applying otel.0005_compacted_spans_move... OK" in upgrade.last_migrate, upgrade.last_migrate
    assert "Applying otel.0006_received_trace_without_packed_spans... OK" in upgrade.last_migrate


def test_the_previous_release_packed_the_otel_traces_and_a_few_are_rows_again(upgrade):
    assert COMPACTED.search(upgrade.old_compaction)[1] == str(OTEL_TRACES), upgrade.old_compaction
    counts = upgrade.before["otel_counts"]
    assert counts["received_traces"] == OTEL_TRACES, counts
    assert counts["packed_traces"] == OTEL_TRACES - upgrade.reopened, counts
    assert 0 < counts["span_rows"] < counts["spans"] and counts["log_records"] > 0, counts


def test_the_previous_release_left_traces_whose_root_never_arrived_underived(upgrade):
    missing = [p for p, d in upgrade.before["otel_trace_details"].items() if d == {"status": 404}]
    assert 0 < len(missing) < OTEL_TRACES / 5, missing


def test_every_packed_form_is_flagged_and_in_the_partition_of_its_trace_s_day(upgrade):
    assert upgrade.misplaced_packed_spans == 0


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


def test_this_tree_compacts_the_traces_reopened_before_the_upgrade(upgrade):
    counts = upgrade.before["otel_counts"]
    compacted = COMPACTED.search(upgrade.new_compaction)
    assert compacted, upgrade.new_compaction
    assert (compacted[1], compacted[2]) == (str(upgrade.reopened), str(counts["span_rows"])), (
        upgrade.new_compaction
    )
    assert upgrade.compacted["otel_counts"] == {**counts, "span_rows": 0, "packed_traces": OTEL_TRACES}


def test_spans_compacted_by_this_tree_read_back_as_before_the_upgrade(upgrade):
    differences = _differences(upgrade.before["otel_spans"], upgrade.compacted["otel_spans"], "otel_spans")
    assert not differences, f"{len(differences)}+ differences in otel_spans:\n" + "\n".join(differences)


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
