#!/usr/bin/env bash
# The shipped path at scale, as a user meets it: start_system.sh (a group of one in simple
# mode, of three in replicated mode), a job dropped into data/jobs, timed until its report.
#
#   bench/bulk.sh job MODE [LO HI]   one fresh run of `primes LO HI` (default [10^12,
#                                    10^12 + 2·10^9]: 72,383,465 primes, a 1.0 GB primes.txt);
#                                    prints the drop-to-report time, the time until every
#                                    member applied it, each coordinator's peak
#                                    RSS (VmHWM) and CPU seconds, and the primes.txt size
#   bench/bulk.sh primesieve [LO HI] the reference: `primesieve LO HI -p > file`, timed
#   bench/bulk.sh small              2,000 files of 1,000 numbers below 10^7 (gen-input),
#                                    renamed into data/input 1 s after
#                                    `./start_system.sh simple 2 --fresh`, timed until every
#                                    report exists; then `worker check` on the same files
#
# Run `job simple` and `job replicated` (and `primesieve`) in turn, several times, and quote
# medians and ratios: the machine is shared and noisy. PRIMES_BASE_PORT is honoured (the
# start script's). Everything under data/ and the root results is cleared (--fresh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins -q
what=${1:?usage: bench/bulk.sh job MODE [LO HI] | primesieve [LO HI] | small}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# Peak RSS (MiB) and CPU seconds (user + system) of the process in pid file $1.
proc_stats() {
  local pid; pid=$(cat "$1" 2>/dev/null) || { echo "-"; return; }
  local hwm ticks
  hwm=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null || echo "?")
  ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
  printf '%s:%sMiB/%.1fs' "$(basename "$1" .pid)" "$hwm" "$(awk -v t="$ticks" -v h="$(getconf CLK_TCK)" 'BEGIN { print t / h }')"
}

# True when every member's own primes.txt (mode $2) is $1 bytes long.
# (simple: data/coordinators/simple/<member>/, replicated: data/coordinators/<member>/).
members_have() {
  local m files=(data/coordinators/simple/*/primes.txt)
  [ "$2" = simple ] || files=(data/coordinators/coordinator-*/primes.txt)
  for m in "${files[@]}"; do
    [ "$(stat -c %s "$m" 2>/dev/null)" = "$1" ] || return 1
  done
}

# Waits, polling, until "$@" succeeds; gives up after 900 s (a wedged run must not hang).
wait_for() {
  local end=$((SECONDS + 900))
  until "$@"; do
    [ $SECONDS -lt $end ] || { echo "bench/bulk.sh: gave up waiting for: $*" >&2; ./stop_system.sh >/dev/null 2>&1; exit 1; }
    sleep 0.05
  done
}

case $what in
job)
  mode=${2:?bench/bulk.sh job simple|replicated [LO HI]}
  lo=${3:-1000000000000}; hi=${4:-1002000000000}
  ./stop_system.sh >/dev/null 2>&1 || true
  mkdir -p data/jobs
  # Job files left by an interrupted run would run again beside this one (--fresh keeps
  # data/jobs): remove this script's, and refuse to time anything else's.
  rm -f data/jobs/bulk*.job
  others=$(find data/jobs -maxdepth 1 -name '*.job' | head -3)
  [ -z "$others" ] || { echo "bench/bulk.sh: data/jobs holds other jobs, which would be timed too: $others" >&2; exit 2; }
  name="bulk$$"
  trap 'rm -f "data/jobs/$name.job"' EXIT
  ./start_system.sh "$mode" 2 --fresh >/dev/null
  t0=$(now)
  printf 'primes %s %s\n' "$lo" "$hi" > "data/jobs/.$name.tmp"
  mv "data/jobs/.$name.tmp" "data/jobs/$name.job"
  wait_for test -e "data/output/jobs/$name.json"
  t1=$(now)
  size=$(stat -c %s primes.txt)
  # Followers apply behind the leader (at idle priority while the job runs): also time
  # until every member's own primes.txt is as long as the root one.
  wait_for members_have "$size" "$mode"
  t2=$(now)
  stats=""
  for f in run/coordinator*.pid; do stats="$stats $(proc_stats "$f")"; done
  ./stop_system.sh >/dev/null
  rm -f "data/jobs/$name.job"
  echo "job $mode [$lo, $hi]: report after $(secs "$t0" "$t1") s; every member applied after $(secs "$t0" "$t2") s; primes.txt $size bytes; peak RSS/CPU:$stats"
  ;;
primesieve)
  lo=${2:-1000000000000}; hi=${3:-1002000000000}
  command -v primesieve >/dev/null || { echo "needs primesieve (apt-get install primesieve)" >&2; exit 2; }
  t0=$(now)
  primesieve "$lo" "$hi" -p > target/primesieve.out
  t1=$(now)
  echo "primesieve [$lo, $hi] -p > file: $(secs "$t0" "$t1") s; $(stat -c %s target/primesieve.out) bytes"
  rm -f target/primesieve.out
  ;;
small)
  src=target/bench-data/small2000
  if [ ! -d "$src" ]; then
    mkdir -p "$src.tmp"
    target/release/gen-input --kind small --files 2000 --lines 1000 --seed 7 --out "$src.tmp" >/dev/null
    mv "$src.tmp" "$src"
  fi
  ./stop_system.sh >/dev/null 2>&1 || true
  rm -rf data/input/small2000
  ./start_system.sh simple 2 --fresh >/dev/null
  sleep 1
  mkdir -p data/input/.stage && cp -r "$src" data/input/.stage/small2000
  expected=()
  for f in "$src"/*; do expected+=("data/output/small2000/${f##*/}.json"); done
  t0=$(now)
  mv data/input/.stage/small2000 data/input/small2000 && rmdir data/input/.stage
  # Polled every 10 ms, cheaply: the reports expected are known, so each poll tests the
  # ones still missing in order and stops at the first missing one (a builtin `test`, no
  # process, no listing); once the last exists, every one is checked again. Before
  # 2026-12-07 this was `find | wc -l` every 50 ms, which added up to ~90 ms to a ~160 ms
  # run and took CPU from it.
  end=$((SECONDS + 900)); i=0
  while :; do
    while [ "$i" -lt "${#expected[@]}" ] && [ -e "${expected[$i]}" ]; do i=$((i + 1)); done
    if [ "$i" -ge "${#expected[@]}" ]; then
      all=1; for r in "${expected[@]}"; do [ -e "$r" ] || { all=0; break; }; done
      [ "$all" = 0 ] || break
      i=0
    fi
    [ $SECONDS -lt $end ] || { echo "bench/bulk.sh: gave up waiting for the reports" >&2; ./stop_system.sh >/dev/null 2>&1; exit 1; }
    sleep 0.01
  done
  t1=$(now)
  ./stop_system.sh >/dev/null
  t2=$(now)
  target/release/worker check "$src"/* > /dev/null
  t3=$(now)
  rm -rf data/input/small2000
  # To the millisecond, and the ratio from the unrounded times (from times rounded to 0.01
  # s, 0.06-0.07 s against 0.12-0.13 s gave ratios from 0.46 to 0.58).
  sys=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  chk=$(awk -v a="$t2" -v b="$t3" 'BEGIN { printf "%.3f", b - a }')
  echo "small: 2000 files reported $sys s after the rename; worker check $chk s; ratio check/system $(awk -v a="$t2" -v b="$t3" -v c="$t0" -v d="$t1" 'BEGIN { printf "%.3f", (b - a) / (d - c) }')"
  # Each report is a new file. On ext4 without a journal, creating one right after
  # --fresh freed the last run's (inodes freed in the last 60-360 s are searched past on
  # every create) costs up to ~300 us: runs in a row get slower (BENCHMARKS, "Small
  # files: the file system's share"). Say so when that is the file system here.
  dev=$(df --output=source . 2>/dev/null | tail -n 1)
  if [ "$(df --output=fstype . 2>/dev/null | tail -n 1)" = ext4 ] && [ -n "$dev" ] \
     && [ -d "/proc/fs/ext4/$(basename "$dev")" ] && [ ! -e "/proc/fs/jbd2/$(basename "$dev")-8" ]; then
    echo "note: $dev is ext4 without a journal: report creation after --fresh is slow here (see BENCHMARKS)"
  fi
  ;;
*) echo "usage: bench/bulk.sh job MODE [LO HI] | primesieve [LO HI] | small" >&2; exit 2 ;;
esac
