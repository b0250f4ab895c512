#!/usr/bin/env bash
# `make engine`: make sure a Docker engine answers.
#   - one answers already: nothing to do;
#   - Debian/Ubuntu host, root, none answers: install docker.io (and debootstrap, which
#     `python -m runner base` uses to make the Debian base without a registry) when
#     missing, start dockerd in the background (log: /var/log/dlbench-dockerd.log) and
#     wait until it answers;
#   - anywhere else: print the fix and exit 2.
# Processes end with the session that started them, so CI calls this before the tests.
set -euo pipefail

LOG=${DLBENCH_DOCKERD_LOG:-/var/log/dlbench-dockerd.log}
WAIT_S=${DLBENCH_DOCKERD_WAIT_S:-60}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi

engine_answers() {
  if "$PY" -c 'import docker' >/dev/null 2>&1; then
    "$PY" -c 'import docker; docker.from_env(timeout=5).ping()' >/dev/null 2>&1
  else
    # no SDK in this interpreter yet (no venv): ask the engine's own client
    command -v docker >/dev/null 2>&1 && timeout 10 docker version >/dev/null 2>&1
  fi
}

if engine_answers; then
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ]; then
  echo "engine: DOCKER_HOST=$DOCKER_HOST does not answer. Start the engine it points at, or unset" \
       "DOCKER_HOST to let \`make engine\` start a local dockerd." >&2
  exit 2
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "engine: no Docker engine answers and this host is not a Debian/Ubuntu host where we are root," \
       "so \`make engine\` cannot start one. Start Docker yourself (e.g. \`sudo systemctl start docker\`," \
       "or Docker Desktop), make sure DOCKER_HOST or /var/run/docker.sock points at it, and run again;" \
       "or run the benchmarks without containers: \`python -m runner --backend local\`." >&2
  exit 2
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "engine: installing ${missing[*]} from the distribution (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if pgrep -x dockerd >/dev/null 2>&1; then
  echo "engine: a dockerd process runs but does not answer yet; waiting for it"
else
  echo "engine: starting dockerd in the background (log: $LOG)"
  mkdir -p "$(dirname "$LOG")"
  # setsid: dockerd outlives this script and ignores the terminal's Ctrl-C.
  setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 "$WAIT_S"); do
  if engine_answers; then
    echo "engine: dockerd answers"
    exit 0
  fi
  sleep 1
done
echo "engine: dockerd did not answer within ${WAIT_S}s; its log is $LOG (last lines below)." >&2
tail -n 20 "$LOG" >&2 || true
exit 2
