#!/usr/bin/env bash
# Starts the prime pipeline: file server(s), coordinator and workers, in the background.
#   ./start_system.sh [simple|replicated] [WORKERS] [--fresh]
# Defaults: simple 3. Resumes from the state on disk unless --fresh. Run again while the
# system is up: starts only what is not running. See README.md for everything else.
set -uo pipefail
cd "$(dirname "$0")" || exit 1

mode=""; workers=""; fresh=0
for a in "$@"; do
  case "$a" in
    simple|replicated) mode=$a ;;
    --fresh) fresh=1 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    ''|*[!0-9]*) echo "start_system.sh: unknown argument '$a' (usage: ./start_system.sh [simple|replicated] [WORKERS] [--fresh])" >&2; exit 2 ;;
    *) workers=$a ;;
  esac
done

BIN=target/release
base=${PRIMES_BASE_PORT:-7400}
host=${PRIMES_HOST:-127.0.0.1}
cache_root=${AFS_CACHE_ROOT:-/tmp/afs}
coord_addr="$host:$base"
http_addr="$host:$((base + 10))"
s1="$host:$((base + 1))"; s2="$host:$((base + 2))"; s3="$host:$((base + 3))"

started=()   # names this run started, for cleanup on failure

# is_ours NAME: the pid in run/NAME.pid is alive and is one of our binaries.
is_ours() {
  local pidf="run/$1.pid" pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$BIN/" || return 1
}

fail() {
  echo "start_system.sh: $1" >&2
  for n in "${started[@]}"; do
    if is_ours "$n"; then kill -9 "$(cat "run/$n.pid")" 2>/dev/null; fi
    rm -f "run/$n.pid"
  done
  exit 1
}

any_running() {
  local f
  for f in run/*.pid; do
    [ -e "$f" ] || continue
    is_ours "$(basename "$f" .pid)" && return 0
  done
  return 1
}

# Defaults: simple 3 — except that a run without arguments while the system is (partly) up
# keeps the mode and worker count it was started with, so it only restarts what died.
if [ -z "$mode" ]; then
  if any_running && [ -f run/mode ] && [ "$fresh" = 0 ]; then mode=$(cat run/mode); else mode=simple; fi
fi
if [ -z "$workers" ]; then
  if any_running && [ -f run/workers ] && [ "$fresh" = 0 ]; then workers=$(cat run/workers); else workers=3; fi
fi
if [ "$workers" -lt 1 ] || [ "$workers" -gt 64 ]; then
  echo "start_system.sh: WORKERS must be between 1 and 64, got $workers" >&2; exit 2
fi
if [ "$mode" = replicated ]; then afs_list="$s1,$s2,$s3"; else afs_list="$s1"; fi

if [ "$fresh" = 1 ]; then
  if any_running; then
    echo "--fresh: stopping the running system first"
    bash ./stop_system.sh || { echo "start_system.sh: could not stop the running system" >&2; exit 1; }
  fi
  rm -rf primes.txt snapshots data/output data/replicas run/status.json run/*.addr
  rm -rf "$cache_root"/worker-* 2>/dev/null
  echo "fresh start: cleared primes.txt, snapshots/, data/output/, replicas and worker caches (data/input kept)"
fi

if [ -f run/mode ] && [ "$(cat run/mode)" != "$mode" ] && any_running; then
  echo "start_system.sh: the system is running in $(cat run/mode) mode; stop it first to switch to $mode" >&2; exit 1
fi

# Build (a no-op when up to date).
if [ ! -f Cargo.toml ] || ! command -v cargo >/dev/null 2>&1; then
  [ -x "$BIN/coordinator" ] || { echo "start_system.sh: cargo (or Cargo.toml) not found and no binaries in $BIN" >&2; exit 1; }
else
  [ -x "$BIN/coordinator" ] || echo "building release binaries (the first time takes a few minutes)..."
  cargo build --release --bins -q || { echo "start_system.sh: build failed (see the errors above)" >&2; exit 1; }
fi

mkdir -p data/input data/output snapshots logs run
echo "$mode" > run/mode; echo "$workers" > run/workers
if [ ! -s run/cluster.key ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > run/cluster.key) || fail "cannot create run/cluster.key"
fi
cat > run/ports.env <<ENV
PRIMES_COORDINATOR=$coord_addr
AFS_SERVERS=$afs_list
ENV

# launch NAME ADDRFILE CMD...: start in the background unless already running, then wait
# for the address file (written once the process is listening).
launch() {
  local name=$1 addrf=$2; shift 2
  if is_ours "$name"; then echo "  $name already running (pid $(cat "run/$name.pid"))"; return 0; fi
  [ -n "$addrf" ] && rm -f "$addrf"
  echo "=== $(date -u +%FT%TZ) starting $name" >> "logs/$name.log"
  nohup "$@" >> "logs/$name.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "run/$name.pid"
  started+=("$name")
  [ -z "$addrf" ] && echo "  $name started (pid $pid)"
  if [ -n "$addrf" ]; then
    for _ in $(seq 200); do
      [ -s "$addrf" ] && { echo "  $name listening on $(cat "$addrf") (pid $pid)"; return 0; }
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    local why
    why=$(grep -v '^===' "logs/$name.log" | tail -n 1)
    fail "$name failed to start: ${why:-no output} (log: logs/$name.log)"
  fi
}

export PRIMES_KEY_FILE="$PWD/run/cluster.key"
# All workers share this machine: give each its share of the cores (one at least), so that
# the scanning threads do not outnumber the cores (3 workers x 2 threads on 2 cores measured
# 15% slower than 3 x 1). PRIMES_THREADS overrides.
cores=$(nproc 2>/dev/null || echo 1)
threads=${PRIMES_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}
echo "starting the $mode system with $workers workers ($threads testing thread(s) each, $cores cores):"
if [ "$mode" = replicated ]; then
  launch server-2 run/server-2.addr "$BIN/afs-server" --id server-2 --role backup --root data/replicas/server-2 --listen "$s2" --addr-file run/server-2.addr
  launch server-3 run/server-3.addr "$BIN/afs-server" --id server-3 --role backup --root data/replicas/server-3 --listen "$s3" --addr-file run/server-3.addr
  launch server-1 run/server-1.addr "$BIN/afs-server" --id server-1 --role primary --root data/input --listen "$s1" --addr-file run/server-1.addr --backup "$s2" --backup "$s3"
else
  launch server-1 run/server-1.addr "$BIN/afs-server" --id server-1 --role primary --root data/input --listen "$s1" --addr-file run/server-1.addr
fi
launch coordinator run/coordinator.addr "$BIN/coordinator" --listen "$coord_addr" --addr-file run/coordinator.addr \
  --http "$http_addr" --http-addr-file run/http.addr --afs "$afs_list"
for i in $(seq "$workers"); do
  launch "worker-$i" "" "$BIN/worker" --id "worker-$i" --coordinator "$coord_addr" --afs "$afs_list" --cache-root "$cache_root" --threads "$threads"
done

# Wait until every worker is registered (the coordinator's status shows it connected).
for i in $(seq "$workers"); do
  ok=0
  for _ in $(seq 300); do
    if "$BIN/coordinator" status --status-file run/status.json --registered "worker-$i" 2>/dev/null
    then ok=1; break; fi
    is_ours "worker-$i" || break
    sleep 0.05
  done
  [ "$ok" = 1 ] || fail "worker-$i did not register with the coordinator: $(tail -n 1 "logs/worker-$i.log" 2>/dev/null) (log: logs/worker-$i.log)"
  echo "  worker-$i registered (pid $(cat "run/worker-$i.pid"))"
done

cat <<MSG
system up ($mode, $workers workers). Drop files into data/input/; primes go to primes.txt.
  dashboard: http://$(cat run/http.addr 2>/dev/null || echo "$http_addr")/
  progress:  $BIN/coordinator status          (--watch for a live view, --json for scripts)
  logs:      logs/coordinator.log, logs/worker-N.log, logs/server-N.log
  reports:   data/output/<file>.json     snapshots: snapshots/
  stop:      ./stop_system.sh
MSG
