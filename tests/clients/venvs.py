"""Virtualenvs for the instrumented clients the OpenTelemetry tests run.

Each client's packages (pinned in ``tests/clients/requirements-<name>.txt``)
live in ``.venv-clients/<name>``, apart from the app's own (their OpenTelemetry
and protobuf versions differ from the app's and from each other). A venv is
installed once and again only when its requirements file changes (a stamp
file, as ``.venv/.installed``). ``python -m tests.clients.venvs [names]``
creates them ahead of the tests (``.ci/run`` does).
"""

import fcntl
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HOME = ROOT / ".venv-clients"
CLIENTS = ("genai", "traceloop", "pipecat")


def requirements(name: str) -> Path:
    return HERE / f"requirements-{name}.txt"


def client_python(name: str) -> Path:
    """The Python of client venv ``name``, created and installed when missing or
    stale. One process installs at a time (a lock file), so a test waits for
    an install that ``.ci/run`` started beside the suite."""
    HOME.mkdir(exist_ok=True)
    with open(HOME / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _installed(name)


def _installed(name: str) -> Path:
    home = HOME / name
    python = home / "bin" / "python"
    stamp = home / ".installed"
    wanted = requirements(name)
    if python.exists() and stamp.exists() and stamp.stat().st_mtime >= wanted.stat().st_mtime:
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
    done = subprocess.run(
        # No bytecode compiled ahead: only what a client imports is, when it does.
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
        + ["--no-compile", "-r", str(wanted)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing {wanted.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    stamp.touch()
    return python


if __name__ == "__main__":
    for client in sys.argv[1:] or CLIENTS:
        print(f"{client}: {client_python(client)}", flush=True)
