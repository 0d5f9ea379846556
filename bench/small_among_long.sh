#!/usr/bin/env bash
# Drop-to-report latency of a small file dropped among long ones (issue 27, defect 2).
# A group of one coordinator (as simple mode runs it), one file server, 3 workers of one
# testing thread each. Each round drops two long files (~20 s of testing each on an idle
# core) and a mid one (~2 s) first, so all three workers are busy; 0.3 s later a 1-line file.
# It is handed out behind one of them; the worker that finishes the mid file is idle ~2 s
# later. Prints, per round, the small file's drop-to-report time and its report time after
# the mid file's report (how long it waited with a worker idle).
#
#   bench/small_among_long.sh [ROUNDS] [BIN_DIR]     (defaults: 3, target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
B=${2:-$PWD/target/release}
[ -n "${2:-}" ] || cargo build --release --workspace --bins -q
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-small.XXXXXX")
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/run" "$work/data/input" "$work/logs" "$work/stage"
cd "$work"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > run/cluster.key
export PRIMES_KEY_FILE="$work/run/cluster.key"
# Long files: 4000-bit odd numbers without small factors (each costs a full modular
# exponentiation, ~20 ms): COUNT of them.
slow() {
  python3 - "$1" "$2" "$3" <<'PY'
import math, random, sys
out, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(seed)
P = 1
for p in range(3, 2000, 2):
    if all(p % q for q in range(3, int(p ** 0.5) + 1, 2)):
        P *= p
nums = []
while len(nums) < count:
    n = random.getrandbits(4000) | 1 | (1 << 3999)
    if math.gcd(n, P) == 1:
        nums.append(n)
open(out, "w").write("\n".join(map(str, nums)) + "\n")
PY
}
read -r -a ports <<< "$(free_ports 2)"
"$B/afs-server" --root data/input --addr-file run/s.addr > logs/server.log 2>&1 & pids+=($!)
while [ ! -s run/s.addr ]; do sleep 0.01; done
saddr=$(< run/s.addr)
caddr="127.0.0.1:${ports[0]}"
"$B/coordinator" --group "$caddr/127.0.0.1:${ports[1]}" --group-id 1 --afs "$saddr" \
  --addr-file run/c.addr > logs/coordinator.log 2>&1 & pids+=($!)
while [ ! -s run/c.addr ]; do sleep 0.01; done
for i in 1 2 3; do
  "$B/worker" --id "worker-$i" --coordinator "$caddr" --afs "$saddr" --cache-root "$work/cache" \
    --threads 1 > "logs/worker-$i.log" 2>&1 & pids+=($!)
done
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_report() { until [ -e "data/output/$1.json" ]; do sleep 0.01; done; }
for r in $(seq "$rounds"); do
  slow stage/long1-$r.txt 1000 $((r * 10 + 1)); slow stage/long2-$r.txt 1000 $((r * 10 + 2))
  slow stage/mid-$r.txt 100 $((r * 10 + 3)); echo 7 > stage/small-$r.txt
  mv stage/long1-$r.txt stage/long2-$r.txt stage/mid-$r.txt data/input/
  sleep 0.3
  t0=$(now_ms); mv stage/small-$r.txt data/input/
  wait_report "mid-$r.txt"; tm=$(now_ms)
  wait_report "small-$r.txt"; ts=$(now_ms)
  echo "round $r: small file reported $((ts - t0)) ms after its drop, $((ts > tm ? ts - tm : 0)) ms after the mid file's report"
  wait_report "long1-$r.txt"; wait_report "long2-$r.txt"
done
