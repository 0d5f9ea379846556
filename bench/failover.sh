#!/usr/bin/env bash
# Failover time of the coordinator group: kill -9 of the leader to the next prime flushed to
# the root primes.txt, KILLS times (default 20), with work flowing all along. The killed
# replica is restarted after each kill (it rejoins as a follower), so every kill is of a
# group of three.
#
#   bench/failover.sh [KILLS]
# Environment: ELECTION_MS (the coordinators' --election-ms, default theirs), WORKERS (2).
# Prints each time, then the median and the worst. Checks primes.txt against `worker check`.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
kills=${1:-20}
workers=${WORKERS:-2}
B=$PWD/target/release
cargo build --release --workspace --bins -q
work=$(mktemp -d "$PWD/target/bench-failover.XXXXXX")
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/run" "$work/data/input" "$work/logs"
cd "$work"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > run/cluster.key
export PRIMES_KEY_FILE="$work/run/cluster.key"
# Enough work for every kill: files of random 64-bit numbers, slowed by --delay-ms so the
# run lasts (primes keep arriving; the time measured is the coordinators', not the work's).
"$B/gen-input" --out data/input --kind random64 --files 1500 --bytes 100000 --seed 21 > /dev/null
read -r -a ports <<< "$(free_ports 6)"
w=(); r=()
for n in 0 1 2; do w+=("127.0.0.1:${ports[$((2 * n))]}"); r+=("127.0.0.1:${ports[$((2 * n + 1))]}"); done
group="${w[0]}/${r[0]},${w[1]}/${r[1]},${w[2]}/${r[2]}"
"$B/afs-server" --root data/input --addr-file run/s.addr > logs/server.log 2>&1 & pids+=($!)
while [ ! -s run/s.addr ]; do sleep 0.01; done
saddr=$(< run/s.addr)
declare -A cpid
start_member() {
  "$B/coordinator" --group "$group" --group-id "$1" --afs "$saddr" --inputs-from-afs \
    ${ELECTION_MS:+--election-ms "$ELECTION_MS"} >> "logs/coordinator-$1.log" 2>&1 &
  cpid[$1]=$!; pids+=($!)
}
for n in 1 2 3; do start_member "$n"; done
for i in $(seq "$workers"); do
  "$B/worker" --id "w$i" --coordinator "${w[0]},${w[1]},${w[2]}" --afs "$saddr" --cache-root "$work/cache" \
    --threads 1 --delay-ms 150 > "logs/w$i.log" 2>&1 & pids+=($!)
done
size() { stat -c %s primes.txt 2>/dev/null || echo 0; }
leader_pid() { { sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' run/status.json 2>/dev/null || true; } | head -n 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Wait for primes to flow.
until [ "$(size)" -gt 0 ]; do sleep 0.05; done
times=()
for k in $(seq "$kills"); do
  # The live leader: the status file's writer, if it is one of the replicas and alive.
  lp=""
  for _ in $(seq 400); do
    lp=$(leader_pid)
    for n in 1 2 3; do
      if [ "${cpid[$n]}" = "$lp" ] && kill -0 "$lp" 2>/dev/null; then leader=$n; break 2; fi
    done
    sleep 0.02
  done
  t0=$(now_ms)
  kill -9 "${cpid[$leader]}"
  wait "${cpid[$leader]}" 2>/dev/null || true
  # Measured from here: a dead leader's appends are all in the file.
  before=$(size)
  while [ "$(size)" -le "$before" ]; do sleep 0.005; done
  t1=$(now_ms)
  times+=($((t1 - t0)))
  echo "kill $k: coordinator-$leader killed; next prime flushed after $((t1 - t0)) ms"
  rm -f run/status.json
  start_member "$leader"
  sleep 1.5   # the restarted replica catches up before the next kill
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
echo "failover (kill -9 of the leader -> next prime in primes.txt), $kills kills: median ${median} ms, worst $(echo "$sorted" | tail -n 1) ms"
# The run's end: every file reported (bounded), then primes.txt against `worker check`.
for _ in $(seq 6000); do
  [ "$(find data/output -name '*.json' 2>/dev/null | wc -l)" -ge 1500 ] && break
  sleep 0.1
done
"$B/worker" check data/input/*.txt 2>/dev/null | sort > expected.txt
sort primes.txt > got.txt
if cmp -s expected.txt got.txt; then
  echo "primes.txt exact after the kills: $(wc -l < got.txt) primes, as worker check finds"
else
  echo "primes.txt MISMATCH after the kills ($(wc -l < got.txt) lines, worker check $(wc -l < expected.txt)); logs in $work" >&2
  trap - EXIT
  kill -9 "${pids[@]}" 2>/dev/null || true
  exit 1
fi
