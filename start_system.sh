#!/usr/bin/env bash
# Starts the prime pipeline: file server(s), coordinator and workers, in the background.
#   ./start_system.sh [simple|replicated] [WORKERS] [--fresh]
# Defaults: simple 3 (then whatever the last start used: mode, workers, PRIMES_BASE_PORT,
# PRIMES_HOST, AFS_CACHE_ROOT are remembered in run/settings.env; changing one while the
# system runs is refused). Resumes from the state on disk unless --fresh. Run again while
# the system is up: starts only what is not running, stops nothing that runs.
# Exit: 0 all up; 1 failed (says why); 2 bad usage or setting; 3 up, but a process that was
# already running is suspended or not answering (named; left as it is). See README.md.
set -uo pipefail
cd "$(dirname "$0")" || exit 1

mode=""; workers=""; fresh=0
for a in "$@"; do
  case "$a" in
    simple|replicated) mode=$a ;;
    --fresh) fresh=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    ''|*[!0-9]*) echo "start_system.sh: unknown argument '$a' (usage: ./start_system.sh [simple|replicated] [WORKERS] [--fresh])" >&2; exit 2 ;;
    *) workers=$a ;;
  esac
done

BIN=target/release
started=()   # names this run started, for cleanup on failure
was_up=0     # 1 when part of the system was already running: a failure then never stops
             # what is healthy or what this run restarted, only what failed

# pid_of NAME: the pid in run/NAME.pid (empty if none).
pid_of() { cat "run/$1.pid" 2>/dev/null; }

# is_ours NAME: the pid in run/NAME.pid is alive and is one of our binaries.
is_ours() {
  local pid
  pid=$(pid_of "$1") || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$BIN/" || return 1
}

# is_stopped NAME: the process is suspended (SIGSTOP / Ctrl-Z): alive, answering nothing.
is_stopped() {
  local pid state
  pid=$(pid_of "$1") || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
  [ "$state" = T ] || [ "$state" = t ]
}

fail() {
  echo "start_system.sh: $1" >&2
  local n
  for n in "${started[@]}"; do
    # On a rerun only the process that failed goes (it is named in $2); the rest stays up.
    if [ "$was_up" = 1 ] && [ "$n" != "${2:-}" ]; then continue; fi
    if is_ours "$n"; then kill -9 "$(pid_of "$n")" 2>/dev/null; fi
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

# Settings: remembered in run/settings.env by the start that set them, reused by every rerun
# (also after ./stop_system.sh), so a rerun never aims a process at another system. While the
# system runs, a different setting is refused; when it is stopped, a given setting wins.
# Defaults: simple mode, 3 workers, ports from 7400, 127.0.0.1, the cache in this checkout.
saved_mode=""; saved_workers=""; saved_base=""; saved_host=""; saved_cache=""
if [ -f run/settings.env ]; then
  while IFS='=' read -r k v; do
    case "$k" in
      MODE) saved_mode=$v ;; WORKERS) saved_workers=$v ;; BASE_PORT) saved_base=$v ;;
      HOST) saved_host=$v ;; CACHE_ROOT) saved_cache=$v ;;
    esac
  done < run/settings.env
fi
up=0; any_running && up=1
[ "$fresh" = 1 ] && up=0   # --fresh stops the running system first
# setting NAME GIVEN SAVED DEFAULT: the value to use; refuses a change while the system runs.
setting() {
  local name=$1 given=$2 saved=$3 def=$4
  if [ -n "$given" ] && [ -n "$saved" ] && [ "$given" != "$saved" ] && [ "$up" = 1 ]; then
    echo "start_system.sh: the running system was started with $name=$saved, not $given; stop it first (./stop_system.sh) to change it" >&2
    exit 2
  fi
  if [ -n "$given" ]; then echo "$given"; elif [ -n "$saved" ]; then echo "$saved"; else echo "$def"; fi
}
mode=$(setting mode "$mode" "$saved_mode" simple) || exit 2
workers=$(setting WORKERS "$workers" "$saved_workers" 3) || exit 2
base=$(setting PRIMES_BASE_PORT "${PRIMES_BASE_PORT:-}" "$saved_base" 7400) || exit 2
host=$(setting PRIMES_HOST "${PRIMES_HOST:-}" "$saved_host" 127.0.0.1) || exit 2
cache_root=$(setting AFS_CACHE_ROOT "${AFS_CACHE_ROOT:-}" "$saved_cache" "$PWD/cache") || exit 2
case "$base" in ''|*[!0-9]*) echo "start_system.sh: PRIMES_BASE_PORT must be a port number, got '$base'" >&2; exit 2 ;; esac
if [ "$workers" -lt 1 ] || [ "$workers" -gt 64 ]; then
  echo "start_system.sh: WORKERS must be between 1 and 64, got $workers" >&2; exit 2
fi
# Checked before anything starts (a worker refused it, and the start then blamed the
# coordinator for a worker that never registered).
case "${PRIMES_THREADS:-1}" in
  ''|*[!0-9]*|0|0*) echo "start_system.sh: PRIMES_THREADS must be a number of testing threads per worker, 1 or more, got '${PRIMES_THREADS:-}'" >&2; exit 2 ;;
esac
coord_addr="$host:$base"
http_addr="$host:$((base + 10))"
s1="$host:$((base + 1))"; s2="$host:$((base + 2))"; s3="$host:$((base + 3))"
if [ "$mode" = replicated ]; then afs_list="$s1,$s2,$s3"; else afs_list="$s1"; fi

if [ "$fresh" = 1 ]; then
  if any_running; then
    echo "--fresh: stopping the running system first"
    bash ./stop_system.sh || { echo "start_system.sh: could not stop the running system" >&2; exit 1; }
  fi
  # The members' old reports become spare report files, written over by the new run's
  # reports instead of creating files: on ext4 without a journal a file created just after
  # thousands were deleted costs ~15x more (the coordinator's --spare-dir; BENCHMARKS.md).
  # The coordinator keeps at most 10,000 of them.
  for d in data/coordinators/*/output data/coordinators/simple/*/output; do
    [ -d "$d" ] || continue
    mkdir -p data/spare-reports && mv "$d" "data/spare-reports/$(date +%Y%m%dT%H%M%S.%N)-$$-$RANDOM" 2>/dev/null || true
  done
  rm -rf primes.txt primes.txt.ranges primes.txt.leader primes.txt.import primes.txt.meta primes.txt.set snapshots data/output data/replicas data/coordinators run/status.json run/*.addr
  rm -rf "$cache_root"/worker-* 2>/dev/null
  echo "fresh start: cleared primes.txt, snapshots/, data/output/, replicas and worker caches (data/input kept)"
fi
any_running && was_up=1

# Build (a no-op when up to date).
if [ ! -f Cargo.toml ] || ! command -v cargo >/dev/null 2>&1; then
  [ -x "$BIN/coordinator" ] || { echo "start_system.sh: cargo (or Cargo.toml) not found and no binaries in $BIN" >&2; exit 1; }
else
  [ -x "$BIN/coordinator" ] || echo "building release binaries (the first time takes a few minutes; cargo shows its progress)..."
  cargo build --release --bins || { echo "start_system.sh: build failed (see the errors above)" >&2; exit 1; }
fi

mkdir -p data/input data/output snapshots logs run
cat > run/settings.env <<SETTINGS
MODE=$mode
WORKERS=$workers
BASE_PORT=$base
HOST=$host
CACHE_ROOT=$cache_root
SETTINGS
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
  # Not a job of this script: bash would print a job-control line ("Killed nohup ...") for
  # each one fail() stops, burying the one line that says why.
  disown "$pid" 2>/dev/null
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
    fail "$name failed to start: ${why:-no output} (log: logs/$name.log)" "$name"
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
  launch server-2 run/server-2.addr "$BIN/afs-server" --id server-2 --role backup --root data/replicas/server-2 --listen "$s2" --addr-file run/server-2.addr --local-socket run/server-2.sock
  launch server-3 run/server-3.addr "$BIN/afs-server" --id server-3 --role backup --root data/replicas/server-3 --listen "$s3" --addr-file run/server-3.addr --local-socket run/server-3.sock
  launch server-1 run/server-1.addr "$BIN/afs-server" --id server-1 --role primary --root data/input --listen "$s1" --addr-file run/server-1.addr --local-socket run/server-1.sock --backup "$s2" --backup "$s3"
else
  launch server-1 run/server-1.addr "$BIN/afs-server" --id server-1 --role primary --root data/input --listen "$s1" --addr-file run/server-1.addr --local-socket run/server-1.sock
fi
coordinators=(coordinator)
if [ "$mode" = replicated ]; then
  # A group of three (Raft): workers' ports base, base+4, base+5; Raft ports base+6..8;
  # dashboards base+10..12 (served by whichever leads).
  coordinators=(coordinator-1 coordinator-2 coordinator-3)
  c_addrs=("$coord_addr" "$host:$((base + 4))" "$host:$((base + 5))")
  group="${c_addrs[0]}/$host:$((base + 6)),${c_addrs[1]}/$host:$((base + 7)),${c_addrs[2]}/$host:$((base + 8))"
  coord_list="${c_addrs[0]},${c_addrs[1]},${c_addrs[2]}"
  for n in 1 2 3; do
    launch "coordinator-$n" "run/coordinator-$n.addr" "$BIN/coordinator" --group "$group" --group-id "$n" \
      --addr-file "run/coordinator-$n.addr" --http "$host:$((base + 9 + n))" --afs "$afs_list" --inputs-from-afs \
      --spare-dir data/spare-reports
  done
else
  # A group of one, through the same code (its Raft port base+6): the same log, replica
  # state and root files as a group of three, without failover. Its state has a folder of
  # its own (a group of three is another group: switching modes merges the root files).
  coord_list="$coord_addr"
  launch coordinator run/coordinator.addr "$BIN/coordinator" --group "$coord_addr/$host:$((base + 6))" --group-id 1 \
    --group-dir data/coordinators/simple --addr-file run/coordinator.addr --http "$http_addr" --http-addr-file run/http.addr --afs "$afs_list" \
    --spare-dir data/spare-reports
fi
for i in $(seq "$workers"); do
  launch "worker-$i" "" "$BIN/worker" --id "worker-$i" --coordinator "$coord_list" --afs "$afs_list" --cache-root "$cache_root" --threads "$threads"
done

# Wait until every worker is registered (the coordinator's status shows it connected). A
# worker this run started that never registers is a failed start. A worker that was already
# running is never stopped or replaced here: it may have been paused on purpose, and after a
# coordinator restart it reconnects by itself; if it stays silent it is reported, and the
# exit status (3) says that not everything asked for is up.
not_up=()
for i in $(seq "$workers"); do
  name="worker-$i"
  ok=0
  for _ in $(seq 300); do
    # Suspended first: the coordinator lists a paused worker as registered until it misses
    # its heartbeats (15 s), but it is not up.
    is_stopped "$name" && break
    if "$BIN/coordinator" status --status-file run/status.json --registered "$name" 2>/dev/null
    then ok=1; break; fi
    is_ours "$name" || break
    sleep 0.05
  done
  if [ "$ok" = 1 ]; then echo "  $name registered (pid $(pid_of "$name"))"; continue; fi
  new=0
  for n in "${started[@]}"; do [ "$n" = "$name" ] && new=1; done
  if [ "$new" = 1 ]; then
    # The cause is usually the coordinators' (no leader, no majority), which status says
    # in its first line; else the worker's own last log line.
    cause=$("$BIN/coordinator" status --status-file run/status.json 2>/dev/null | head -n 1)
    case "$cause" in
      "coordinator: NOT RUNNING"*) cause=${cause#coordinator: NOT RUNNING: } ;;
      *) cause="its log ends: $(tail -n 1 "logs/$name.log" 2>/dev/null | cut -c1-300)" ;;
    esac
    fail "$name did not register with the coordinator: $cause (logs: logs/$name.log, logs/coordinator*.log; coordinator status shows more)" "$name"
  elif is_stopped "$name"; then
    not_up+=("$name (pid $(pid_of "$name")) is suspended (SIGSTOP): left as it is; kill -CONT $(pid_of "$name") resumes it and it rejoins")
  else
    not_up+=("$name (pid $(pid_of "$name")) is running but not registered with the coordinator: left as it is; see logs/$name.log")
  fi
done
for n in "${coordinators[@]}" server-1 server-2 server-3; do
  is_ours "$n" && is_stopped "$n" && not_up+=("$n (pid $(pid_of "$n")) is suspended (SIGSTOP): kill -CONT $(pid_of "$n") resumes it")
done

if [ "$mode" = replicated ]; then
  dashboard="http://$host:$((base + 10))/ (or :$((base + 11)), :$((base + 12)): the leader serves it)"
  group_note="  group:     coordinator-1..3 (Raft); state in data/coordinators/coordinator-N/; status shows the leader
"
else
  dashboard="http://$(cat run/http.addr 2>/dev/null || echo "$http_addr")/"
  group_note=""
fi
# The first line says whether everything is up: "system up" only when it is.
if [ ${#not_up[@]} -gt 0 ]; then
  headline="system partly up ($mode, $workers workers): ${#not_up[@]} not up (listed below, exit 3); the rest runs."
else
  headline="system up ($mode, $workers workers)."
fi
cat <<MSG
$headline Drop files into data/input/; primes go to primes.txt.
  dashboard: $dashboard
  progress:  $BIN/coordinator status          (--watch for a live view, --json for scripts)
  logs:      logs/coordinator*.log, logs/worker-N.log, logs/server-N.log
  reports:   data/output/<file>.json     snapshots: snapshots/
  stop:      ./stop_system.sh
MSG
printf '%s' "$group_note"
if [ ${#not_up[@]} -gt 0 ]; then
  for m in "${not_up[@]}"; do echo "start_system.sh: not up: $m" >&2; done
  exit 3
fi
