#!/usr/bin/env bash
# kill -9 of the replicated group's leader mid-job, as a user does it: `start_system.sh
# replicated 2 --fresh`, a `primes` job dropped into data/jobs, the leader killed AT seconds
# later (default 2.0); prints, from the other members' logs, when one won its pre-vote and
# was elected, when it served workers and when it flushed its first primes (seconds after
# the kill), then when the job's report existed and that primes.txt has no duplicate.
#
#   bench/midkill.sh [AT] [LO HI]     (default [10^12, 10^12 + 2·10^9])
# Everything under data/ and the root results is cleared (--fresh); PRIMES_BASE_PORT is
# honoured (the start script's).
set -uo pipefail
cd "$(dirname "$0")/.."
at=${1:-2.0}; lo=${2:-1000000000000}; hi=${3:-1002000000000}
./stop_system.sh >/dev/null 2>&1
rm -f data/jobs/midkill*.job
others=$(find data/jobs -maxdepth 1 -name '*.job' 2>/dev/null | head -3)
[ -z "$others" ] || { echo "bench/midkill.sh: data/jobs holds other jobs: $others" >&2; exit 2; }
RUST_LOG=${RUST_LOG:-info,coordinator::flusher=debug} ./start_system.sh replicated 2 --fresh >/dev/null || exit 1
for f in logs/coordinator-*.log; do echo "=== midkill mark" >> "$f"; done
leader=$(target/release/coordinator status --json --status-file run/status.json 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["group"]["leader"])')
printf 'primes %s %s\n' "$lo" "$hi" > data/jobs/.midkill.tmp && mv data/jobs/.midkill.tmp data/jobs/midkill.job
t0=$(date +%s.%N)
sleep "$at"
tk=$(date +%s.%N); kill -9 "$(cat "run/coordinator-$leader.pid")"
for _ in $(seq 1200); do [ -e data/output/jobs/midkill.json ] && break; sleep 0.1; done
t1=$(date +%s.%N)
python3 - "$tk" "$leader" <<'PY'
import glob, sys
from datetime import datetime, timezone
tk, old = float(sys.argv[1]), sys.argv[2]
def ts(l):
    return datetime.strptime(l[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
for f in sorted(glob.glob("logs/coordinator-*.log")):
    if f.endswith(f"-{old}.log"):
        continue
    ev = {}
    for l in open(f).read().split("=== midkill mark")[-1].splitlines():
        if not l[:4].isdigit() or ts(l) < tk:
            continue
        for k, pat in [("pre-vote won", "pre-vote won"), ("elected", "leads term"),
                       ("serving", "serving workers"), ("first flush", "flushed primes")]:
            if pat in l and k not in ev:
                ev[k] = round(ts(l) - tk, 2)
    if "first flush" in ev:
        print(f"{f}: " + ", ".join(f"{k} {v} s" for k, v in ev.items()))
PY
echo "job report $(echo "$t1 - $t0" | bc) s after the drop; primes.txt lines $(wc -l < primes.txt), distinct $(sort -u primes.txt | wc -l)"
./stop_system.sh >/dev/null
rm -f data/jobs/midkill.job
