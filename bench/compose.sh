#!/usr/bin/env bash
# The compose cluster (deploy/compose.yaml: 3 file servers, coordinator, 3 workers, each in
# its own container) on this machine: time from `docker-compose up` to all workers
# registered, and throughput on dataset (b) (4 x 64 MiB of random 64-bit numbers), from
# `up` with the input already in place until every report exists, output checked.
#   bench/compose.sh [RUNS]        (needs docker, docker-compose; makes the image)
# Compare with `WORKERS=3 bench/pipeline.sh b RUNS` (the same system without containers).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
B=$PWD/target/release
cargo build --release --workspace --bins -q
deploy/base-image.sh >/dev/null
docker build -q -f deploy/Dockerfile -t primes-bench . >/dev/null
bench/pipeline.sh b 1 >/dev/null   # generates target/bench-data/b and its expected output
data=$PWD/target/bench-data/b
expected=$PWD/target/bench-data/expected-b.txt
files=$(find "$data" -name '*.txt' | wc -l)
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ups=(); totals=()
for r in $(seq "$runs"); do
  work=$(mktemp -d "$PWD/target/bench-compose.XXXXXX")
  mkdir -p "$work/input" "$work/results"
  cp -al "$data"/*.txt "$work/input/" 2>/dev/null || cp "$data"/*.txt "$work/input/"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/cluster.key"
  chown 10001:10001 "$work/cluster.key" "$work/results"; chmod 600 "$work/cluster.key"
  export PRIMES_INPUT=$work/input PRIMES_RESULTS=$work/results PRIMES_KEY_FILE=$work/cluster.key \
    PRIMES_IMAGE=primes-bench PRIMES_HTTP_PUBLISH=127.0.0.1:
  project=primesbench$$r
  t0=$(now)
  docker-compose -p "$project" -f deploy/compose.yaml up -d >/dev/null 2>&1
  until [ -s "$work/results/run/status.json" ] && \
    [ "$(grep -c '"state": "\(idle\|busy\)"' "$work/results/run/status.json")" -ge 3 ]; do sleep 0.02; done
  t1=$(now)
  "$B/wait-files" "$work/results/data/output" "$files" >/dev/null
  t2=$(now)
  docker-compose -p "$project" -f deploy/compose.yaml down -v -t 2 >/dev/null 2>&1
  sort "$work/results/primes.txt" | cmp -s - "$expected" || { echo "OUTPUT MISMATCH in $work" >&2; exit 1; }
  ups+=("$(echo "$t1 - $t0" | bc -l)"); totals+=("$(echo "$t2 - $t0" | bc -l)")
  rm -rf "$work"
done
echo "compose up -> 3 workers registered: median $(printf '%s\n' "${ups[@]}" | median) s   (runs: ${ups[*]})"
echo "dataset b in containers, up -> all reports: median $(printf '%s\n' "${totals[@]}" | median) s   (runs: ${totals[*]})"
docker rmi primes-bench >/dev/null 2>&1 || true
