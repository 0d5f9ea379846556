#!/usr/bin/env bash
# End-to-end generation jobs through the whole system (file server, coordinator, workers):
# from dropping the job file until its report exists, with the coordinator's peak memory.
#
#   bench/jobs.sh "JOB LINE" [RUNS]      e.g. bench/jobs.sh "primes 1000000000000 1001000000000" 3
#
# Each run starts from an empty folder. Prints per run: seconds, the coordinator's peak RSS
# (VmHWM, MiB), primes in primes.txt, primes held in the dedup set, the report's count or
# answer; then the median time. A `count` job's answer is checked against primecount's
# π(B) − π(A − 1) when primecount is installed, a `primes` job's count against
# `primesieve A B --count`.
# Environment: WORKERS (2), THREADS per worker (1), COORD_FLAGS (extra coordinator flags,
# e.g. "--segment-numbers 16777216"), SYSTEM_BIN=DIR to measure the binaries
# of another build (e.g. an older commit's target/release) with this script.
set -euo pipefail
cd "$(dirname "$0")/.."
line=${1:?usage: bench/jobs.sh "JOB LINE" [RUNS]}
runs=${2:-3}
workers=${WORKERS:-2}
threads=${THREADS:-1}
cargo build --release --workspace --bins -q
B=${SYSTEM_BIN:-$PWD/target/release}
trash=$(mktemp -d "$PWD/target/bench-trash.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$trash"
}
trap cleanup EXIT
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
read -r kind a b <<< "$line"
want=""
# The reference count: primecount's π(B) − π(A − 1) for a count (sublinear: seconds at
# 10^16, where sieving with primesieve takes hours), else primesieve over the range.
if [ "$kind" = count ] && command -v primecount >/dev/null; then
  want=$(( $(primecount "$b") - $(primecount "$((a - 1))") ))
elif command -v primesieve >/dev/null && { [ "$kind" = primes ] || [ "$kind" = count ]; }; then
  want=$(primesieve "$a" "$b" --count --quiet 2>/dev/null || primesieve "$a" "$b" --count | grep -o '[0-9]*$')
fi

times=()
for r in $(seq "$runs"); do
  work=$(mktemp -d "$trash/run.XXXXXX")
  mkdir -p "$work/run" "$work/data/input" "$work/data/jobs"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/run/cluster.key"
  export PRIMES_KEY_FILE="$work/run/cluster.key"
  cd "$work"
  pids=()
  "$B/afs-server" --root data/input --addr-file run/s.addr > s.log 2>&1 & pids+=($!)
  "$B/coordinator" --listen 127.0.0.1:0 --addr-file run/c.addr ${COORD_FLAGS:-} > c.log 2>&1 & pids+=($!)
  cpid=$!
  while [ ! -s run/s.addr ] || [ ! -s run/c.addr ]; do sleep 0.01; done
  caddr=$(< run/c.addr); saddr=$(< run/s.addr)
  for i in $(seq "$workers"); do
    "$B/worker" --id "w$i" --coordinator "$caddr" --afs "$saddr" --cache-root "$work/cache" --threads "$threads" > "w$i.log" 2>&1 & pids+=($!)
  done
  # Every worker registered before the clock starts.
  until [ -s run/status.json ] && [ "$(grep -Eo '"state": ?"(idle|busy)"' run/status.json | wc -l)" -ge "$workers" ]; do sleep 0.05; done
  echo "$line" > data/job.tmp
  t0=$(now)
  mv data/job.tmp data/jobs/bench.job
  until [ -s data/output/jobs/bench.json ]; do sleep 0.01; done
  t1=$(now)
  hwm=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$cpid/status")
  sleep 0.6 # the status file is rewritten every 0.5 s
  in_set=$(grep -Eo '"primes_in_set": ?[0-9]+' run/status.json | grep -o '[0-9]*$' || true)
  lines=$(wc -l < primes.txt)
  result=$(grep -Eo '"(count|answer)": ?"?[0-9]+' data/output/jobs/bench.json | head -1 | grep -o '[0-9]*$')
  status=$(grep -Eo '"status": ?"[a-z]+"' data/output/jobs/bench.json | tr -d ' ')
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cd - > /dev/null
  rm -rf "$work"
  secs=$(echo "$t1 - $t0" | bc)
  times+=("$secs")
  check=""
  if [ -n "$want" ]; then
    if [ "$result" = "$want" ]; then check="(= reference)"; else check="(reference says $want!)"; fi
  fi
  printf 'run %d: %.2f s  coordinator peak RSS %s MiB  primes.txt %s lines  dedup set %s  %s %s %s\n' \
    "$r" "$secs" "$hwm" "$lines" "${in_set:-n/a}" "$status" "$result" "$check"
done
printf 'median %.2f s over %d runs (%s; %d workers x %d threads)\n' \
  "$(printf '%s\n' "${times[@]}" | median)" "$runs" "$line" "$workers" "$threads"
