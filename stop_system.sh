#!/usr/bin/env bash
# Stops the prime pipeline gracefully: workers deregister, the coordinator flushes its
# buffer and writes a final snapshot, then the file servers stop. Whatever has not exited
# after the timeout (PRIMES_STOP_TIMEOUT seconds, default 10) is killed. Only processes
# started by start_system.sh (pid files under run/) are ever signalled.
set -uo pipefail
cd "$(dirname "$0")" || exit 1
for a in "$@"; do
  case "$a" in
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; echo "Usage: ./stop_system.sh (no arguments). Exit: 0 stopped (or nothing ran)."; exit 0 ;;
    *) echo "stop_system.sh: unknown argument '$a' (usage: ./stop_system.sh; it takes no arguments)" >&2; exit 2 ;;
  esac
done
BIN=target/release
timeout_s=${PRIMES_STOP_TIMEOUT:-10}

is_ours() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$BIN/" || return 1
}

# stop NAME...: SIGTERM each, wait for all, SIGKILL the rest.
stop() {
  local pids=() names=() n pid
  for n in "$@"; do
    [ -f "run/$n.pid" ] || continue
    pid=$(cat "run/$n.pid")
    if is_ours "$pid"; then
      kill -CONT "$pid" 2>/dev/null  # a stopped (SIGSTOP) process cannot act on SIGTERM
      kill -TERM "$pid" 2>/dev/null
      pids+=("$pid"); names+=("$n")
    else
      rm -f "run/$n.pid"
    fi
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  local deadline=$((SECONDS + timeout_s)) i
  while [ $SECONDS -lt $deadline ]; do
    local alive=0
    for pid in "${pids[@]}"; do is_ours "$pid" && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if is_ours "${pids[$i]}"; then
      echo "  ${names[$i]} did not exit within ${timeout_s}s: killed"
      kill -KILL "${pids[$i]}" 2>/dev/null
    else
      echo "  ${names[$i]} stopped"
    fi
    rm -f "run/${names[$i]}.pid"
  done
}

shopt -s nullglob
workers=()
for f in run/worker-*.pid; do workers+=("$(basename "$f" .pid)"); done
servers=()
for f in run/server-*.pid; do servers+=("$(basename "$f" .pid)"); done
coords=()
for f in run/coordinator*.pid; do coords+=("$(basename "$f" .pid)"); done
if [ ${#workers[@]} -eq 0 ] && [ ${#coords[@]} -eq 0 ] && [ ${#servers[@]} -eq 0 ]; then
  echo "nothing to stop (no pid files in run/)"
  exit 0
fi
echo "stopping workers, then the coordinator (final flush and snapshot), then the file servers:"
stop "${workers[@]}"
# A group's leader goes first, while the others can still commit its final flush; it is the
# one whose pid the status file shows.
leader_pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' run/status.json 2>/dev/null | head -n 1)
first=(); rest=()
for n in "${coords[@]}"; do
  if [ -n "$leader_pid" ] && [ "$(cat "run/$n.pid" 2>/dev/null)" = "$leader_pid" ]; then first+=("$n"); else rest+=("$n"); fi
done
stop "${first[@]}"
stop "${rest[@]}"
stop "${servers[@]}"
rm -f run/*.addr run/*.member.json run/*.sock run/*.sock.lock
echo "stopped. primes.txt has $(wc -l < primes.txt 2>/dev/null || echo 0) primes."
