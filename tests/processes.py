"""Real services on loopback for the outage, backup and load tests: a throwaway
PostgreSQL cluster, a Redis server, Daphne and Celery workers. Each runs in its
own process group and temporary directory, and is always stopped (``killpg``)
by the context manager that started it."""

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], object], *, timeout: float, what: str, log: Path | None = None, step=0.2
):
    """Poll ``predicate`` until it returns something true; fail with ``what``
    (and the tail of ``log``) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"{what} within {timeout:.0f} s\n{tail}")
        time.sleep(step)


def http(
    method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None, timeout: float = 30
) -> tuple[int, dict, bytes]:
    """One request; (status, headers, body) for every HTTP answer, errors included."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal a process group started with ``start_new_session``; SIGKILL it if
    it outlives ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def app_env(**overrides: str) -> dict[str, str]:
    """The environment of a server or worker process: the test's own, minus the
    database and Redis it would otherwise inherit, plus ``overrides``."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_REPLICA_URL", "REDIS_URL")
    }
    env.update(LOG_LEVEL="WARNING", **overrides)
    return env


def current_database_url() -> str:
    """The URL of the database this test run uses, for servers and workers
    that must see what the test wrote (transactional tests, PostgreSQL)."""
    from django.db import connection

    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    return f"postgres://{db['USER']}{password}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


def shared_env(redis_url: str, var_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a server or worker that shares this test's database
    (and signs sessions with its secret key), on the Redis at ``redis_url``."""
    from django.conf import settings

    return app_env(
        DATABASE_URL=current_database_url(),
        REDIS_URL=redis_url,
        VAR_DIR=str(var_dir),
        SECRET_KEY=settings.SECRET_KEY,
        **overrides,
    )


def manage(*args: str, env: dict[str, str]) -> str:
    """``python manage.py …`` in a subprocess; its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextlib.contextmanager
def daphne(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """Daphne serving the app on a free loopback port; yields its base URL."""
    port = free_port()
    log = log_dir / f"daphne-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "thinnest_analytics.server", "-b", "127.0.0.1", "-p", str(port)]
            + ["thinnest_analytics.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is None and http("GET", f"{base}/healthz", timeout=10)[0],
            timeout=60,
            what="Daphne did not answer",
            log=log,
        )
        yield base
    finally:
        stop(proc)


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log: Path, *, beat: bool = False) -> Iterator[subprocess.Popen]:
    """A Celery worker (solo pool: one process, killed at once by SIGKILL),
    with beat when asked; yields once it is consuming."""
    command = [sys.executable, "-m", "celery", "-A", "thinnest_analytics", "worker", "--pool=solo"]
    command += ["--loglevel=INFO", "--without-gossip", "--without-mingle", "-n", f"w{free_port()}@%h"]
    if beat:
        command += ["--beat", "--schedule", str(log.with_suffix(".beat"))]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(
            lambda: proc.poll() is None and b" ready." in log.read_bytes(),
            timeout=60,
            what="the Celery worker did not start",
            log=log,
        )
        yield proc
    finally:
        stop(proc)


def _owned_tempdir(user: str | None) -> Path:
    path = Path(tempfile.mkdtemp(prefix="thinnest-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free
    loopback port, trust authentication. PostgreSQL refuses to run as root, so
    as root its programs run as the ``postgres`` OS user."""

    def __init__(self, port: int | None = None) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        initdb = found[-1] if found else shutil.which("initdb")
        if initdb is None:
            pytest.skip("needs the PostgreSQL server programs (initdb, pg_ctl)")
        self.bin = Path(initdb).resolve().parent
        if not all((self.bin / program).exists() for program in ("pg_ctl", "pg_dump", "pg_restore")):
            pytest.skip(f"needs pg_ctl, pg_dump and pg_restore beside {initdb}")
        self.user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root needs a 'postgres' OS user to run PostgreSQL as")
            self.user = "postgres"
        self.dir = _owned_tempdir(self.user)
        self.data = self.dir / "data"
        self.port = port or free_port()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, start_new_session=True
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"
        )

    def basebackup(self, primary: "PostgresCluster") -> None:
        """Make this cluster a streaming standby of ``primary`` (``pg_basebackup -R``)."""
        self._run(
            str(self.bin / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(self.data), "-R", "-X", "stream", "-c", "fast"),
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, database: str, statement: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


class RedisServer:
    """redis-server on a free loopback port, no persistence: a restart loses
    what was queued, as a crashed Redis without persistence would."""

    def __init__(self, log_dir: Path) -> None:
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            pytest.skip("needs redis-server")
        self.port = free_port()
        self.log = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.exe,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                cwd=self.log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.ping, timeout=20, what="redis-server did not answer", log=self.log)

    def ping(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
