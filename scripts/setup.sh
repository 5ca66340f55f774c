#!/usr/bin/env bash
# Create .venv with Python >= 3.12 and install the pinned requirements,
# saying what it does: the first run installs about seventy packages.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for candidate in "${PYTHON:-}" python3.14 python3.13 python3.12 python3 python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(find_python) || { echo "Python 3.12 or newer is needed (set PYTHON=/path/to/python3.12)." >&2; exit 1; }
  echo "==> Creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ requirements.txt -nt .venv/.installed ]; then
  total=$(grep -cE '^[A-Za-z0-9]' requirements.txt)
  echo "==> Installing $total Python packages into .venv (about a minute the first time)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  # A running count of the packages pip has got to (on a terminal), instead of silence.
  log=.venv/pip-install.log
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -r requirements.txt >"$log" 2>&1 &
  pip_pid=$!
  seen=
  while [ -t 1 ] && kill -0 "$pip_pid" 2>/dev/null; do
    now=$(grep -c '^Collecting \|^Requirement already satisfied' "$log" || true)
    if grep -q '^Installing collected packages' "$log"; then now="installing"; fi
    if [ "$now" != "$seen" ]; then
      seen=$now
      if [ "$now" = installing ]; then printf '\r    all found; unpacking them into .venv%-20s' ''
      else printf '\r    %s of %s packages found' "$now" "$total"; fi
    fi
    sleep 0.5
  done
  if ! wait "$pip_pid"; then
    echo; echo "pip failed; the end of its log ($log):" >&2; tail -30 "$log" >&2; exit 1
  fi
  if [ -t 1 ]; then printf '\r%-60s\r' ''; fi
  echo "    $total packages installed."
  touch .venv/.installed
fi
