#!/usr/bin/env bash
# End-to-end throughput of the whole system (file server + coordinator + workers), from an
# empty state until every report exists, against the single-process `worker check` on the
# same files and cores, and (optionally) the shell pipeline a user would write by hand.
#
#   bench/pipeline.sh DATASET [RUNS]     DATASET: a | b | c | snap
#     a: 2000 files x 1000 numbers from 1..10^7     (many small files, small numbers)
#     b: 4 files x 64 MB of random 64-bit numbers   (a few large files)
#     c: one 2 GiB file of random 64-bit numbers
#     snap: dataset b with snapshots every 1 s vs snapshots off, alternating
#     snap10k: size and write time of snapshots holding 10,000 queued tasks
#     latency: time from dropping a one-line file to its prime in primes.txt (RUNS drops)
# Environment: WORKERS (2), THREADS per worker (1), GROUP=N (1 or 3) to run the coordinator
# as a Raft group of N members (a group of three learns the inputs from the file server)
# instead of a coordinator without a group, GROUP=both for simple mode (1) and replicated
# mode (3) in turn with `worker check` in one invocation, with per-round ratios, FACTOR=1 to time the coreutils pipeline,
# WARMUP discarded system runs before the measured ones (2; see below),
# SYSTEM_BIN=DIR to measure the afs-server, coordinator and worker binaries of another build
# (e.g. an older commit's target/release) with this script and its tools.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?usage: bench/pipeline.sh a|b|c|snap [RUNS]}
runs=${2:-3}
workers=${WORKERS:-2}
threads=${THREADS:-1}
T=$PWD/target/release            # tools: gen-input, wait-files
cargo build --release --workspace --bins -q
B=${SYSTEM_BIN:-$T}               # the measured system
cache=$PWD/target/bench-data   # under the repo: file creation in /tmp measured 4x slower here
mkdir -p "$cache"

gen() { # NAME ARGS... : generate once into $cache/NAME
  local name=$1; shift
  if [ ! -f "$cache/$name/.done" ]; then
    rm -rf "$cache/$name"
    "$T/gen-input" --out "$cache/$name" "$@"
    touch "$cache/$name/.done"
  fi
}
case "$dataset" in
  a) gen a --kind small --files 2000 --lines 1000 --seed 11 ;;
  b|snap) gen b --kind random64 --files 4 --bytes 67108864 --seed 12 ; dataset_dir=b ;;
  snap10k) gen snap10k --kind small --files 10000 --lines 1 --seed 14 ;;
  latency) dataset_dir=a ;;
  c) gen c --kind random64 --files 1 --bytes 2147483648 --seed 13 ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
data="$cache/${dataset_dir:-$dataset}"
files=$(find "$data" -name '*.txt' | wc -l)
bytes=$(du -sb "$data" | cut -f1)

now() { date +%s.%N; }
. bench/lib.sh
# await_files PIDS FILE...: polls every 2 ms until each file is non-empty; after 30 s, or
# once a process of the run has exited, kills the run's processes and fails with their logs.
all_alive() { local p; for p in $1; do kill -0 "$p" 2>/dev/null || return 1; done; }
await_files() {
  local pids=$1 f deadline=$((SECONDS + 30)) polls=0; shift
  for f in "$@"; do
    while [ ! -s "$f" ]; do
      polls=$((polls + 1))
      if [ "$SECONDS" -ge "$deadline" ] || { [ $((polls % 50)) = 0 ] && ! all_alive "$pids"; }; then
        echo "no $f (a process exited, or 30 s passed); logs in $PWD:" >&2
        tail -n 3 ./*.log >&2
        kill $pids 2>/dev/null
        return 1
      fi
      sleep 0.002
    done
  done
}
# Work folders are removed when the script ends, not between runs: ext4 is slow to create
# files right after thousands were deleted (it skips recently freed inodes), which made each
# run of dataset (a) slower than the one before it (0.58 s, 0.98 s, 2.1 s, ...).
trash=$(mktemp -d "$PWD/target/bench-trash.XXXXXX")
trap 'rm -rf "$trash"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# run_system SNAPSHOT_MS -> prints elapsed seconds; checks the output.
run_system() {
  local snap_ms=$1 work pids=() t0 t1
  work=$(mktemp -d "$PWD/target/bench-run.XXXXXX")
  mkdir -p "$work/run" "$work/data"
  cp -al "$data" "$work/data/input" 2>/dev/null || cp -r "$data" "$work/data/input"
  rm -f "$work/data/input/.done"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/run/cluster.key"
  export PRIMES_KEY_FILE="$work/run/cluster.key"
  cd "$work"
  # A group's ports, picked before the clock starts (each pick runs python).
  local gw=() gr=() n spec ports
  if [ "${GROUP:-0}" != 0 ]; then
    read -r -a ports <<< "$(free_ports $((2 * GROUP)))"
    for n in $(seq 0 $((GROUP - 1))); do
      gw+=("127.0.0.1:${ports[$((2 * n))]}"); gr+=("127.0.0.1:${ports[$((2 * n + 1))]}")
    done
  fi
  t0=$(now)
  AFS_LOCAL_SOCKET=run/s.sock "$B/afs-server" --root data/input --addr-file run/s.addr > s.log 2>&1 & pids+=($!)
  if [ "${GROUP:-0}" = 3 ]; then
    await_files "${pids[*]}" run/s.addr
    spec="${gw[0]}/${gr[0]},${gw[1]}/${gr[1]},${gw[2]}/${gr[2]}"
    for n in 1 2 3; do
      "$B/coordinator" --group "$spec" --group-id "$n" --afs "$(< run/s.addr)" --inputs-from-afs \
        --addr-file "run/c$n.addr" --snapshot-ms "$snap_ms" > "c$n.log" 2>&1 & pids+=($!)
    done
    await_files "${pids[*]}" run/c3.addr
    echo "${gw[0]},${gw[1]},${gw[2]}" > run/c.addr
  elif [ "${GROUP:-0}" = 1 ]; then
    "$B/coordinator" --group "${gw[0]}/${gr[0]}" --group-id 1 \
      --addr-file run/c.addr --snapshot-ms "$snap_ms" > c.log 2>&1 & pids+=($!)
  else
    "$B/coordinator" --listen 127.0.0.1:0 --addr-file run/c.addr --snapshot-ms "$snap_ms" > c.log 2>&1 & pids+=($!)
  fi
  # The harness's own latency before the workers start is not the system's: poll every 2 ms
  # and read the addresses with bash builtins (four `cat` processes and a 10 ms poll took
  # ~10 ms of the ~0.18 s of dataset a).
  await_files "${pids[*]}" run/s.addr run/c.addr
  local caddr saddr
  caddr=$(< run/c.addr); saddr=$(< run/s.addr)
  for i in $(seq "$workers"); do
    "$B/worker" --id "w$i" --coordinator "$caddr" --afs "$saddr" --cache-root "$work/cache" --threads "$threads" > "w$i.log" 2>&1 & pids+=($!)
  done
  # The moment the last report appeared, as wait-files saw it (its own exit, which waits
  # for the kernel to release its inotify instance, took up to 25 ms and is not the system's).
  t1=$("$T/wait-files" data/output "$files")
  # CPU (user + system) of every process of the system, in clock ticks, before they go.
  local ticks=0 p t detail=""
  for p in "${pids[@]}"; do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    ticks=$((ticks + t))
    detail+=" $(basename "$(readlink "/proc/$p/exe" 2>/dev/null || echo gone)")=$t"
  done
  # CPU_DETAIL=1: each process's CPU (clock ticks) per run, on stderr.
  [ "${CPU_DETAIL:-0}" = 1 ] && echo "cpu ticks:$detail" >&2
  if [[ "$detail" == *gone=* ]]; then
    # Kept: the run's folder goes when the script ends.
    local kept="$PWD/../bench-failures/$(basename "$work")"
    mkdir -p "$kept" && cp "$work"/*.log "$kept/"
    echo "a process of the system exited before the end of the run (logs kept in $kept):" >&2
    tail -n 3 "$work"/*.log >&2
  fi
  kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true
  sort primes.txt > sorted.txt
  if ! cmp -s sorted.txt "$cache/expected-${dataset_dir:-$dataset}.txt"; then
    echo "OUTPUT MISMATCH in $work" >&2; exit 1
  fi
  cd - > /dev/null
  mv "$work" "$trash/"
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "scale=3; $ticks / $(getconf CLK_TCK)" | bc -l)"
}

run_check() {
  local t0 t1 cpu
  t0=$(now)
  # `times` in the subshell prints its children's user and system CPU on its second line.
  cpu=$( ( "$B/worker" check --threads "$((workers * threads))" $(find "$data" -name '*.txt' | sort) > /tmp/primes-check.out 2>/dev/null; times ) | tail -1 \
    | awk '{ for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } print t }')
  t1=$(now)
  echo "$(echo "$t1 - $t0" | bc -l) $cpu"
}

# Expected output (sorted) from the baseline, once.
if [ ! -f "$cache/expected-${dataset_dir:-$dataset}.txt" ]; then
  "$B/worker" check $(find "$data" -name '*.txt' | sort) 2>/dev/null | sort > "$cache/expected-${dataset_dir:-$dataset}.txt"
fi

echo "dataset $dataset: $files files, $bytes bytes; $workers workers x $threads threads; $runs runs (medians)"
if [ "$dataset" = snap ]; then
  on=(); off=()
  for r in $(seq "$runs"); do
    off+=("$(run_system 0)")
    on+=("$(run_system 1000)")
  done
  m_off=$(printf '%s\n' "${off[@]}" | median); m_on=$(printf '%s\n' "${on[@]}" | median)
  echo "snapshots off:        $m_off s   (runs: ${off[*]})"
  echo "snapshots every 1 s:  $m_on s   (runs: ${on[*]})"
  echo "slowdown: $(echo "scale=6; ($m_on - $m_off) / $m_off * 100" | bc -l | xargs printf '%.2f') %"
  exit 0
fi
if [ "$dataset" = latency ]; then
  # Time from `mv` of a one-line file into data/input to its prime being in primes.txt, on a
  # running idle system (default intervals: flush 0.5 s, with an early flush on completion).
  work=$(mktemp -d "$PWD/target/bench-run.XXXXXX")
  mkdir -p "$work/run" "$work/data/input" "$work/stage"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/run/cluster.key"
  export PRIMES_KEY_FILE="$work/run/cluster.key"
  cd "$work"
  pids=()
  AFS_LOCAL_SOCKET=run/s.sock "$B/afs-server" --root data/input --addr-file run/s.addr > s.log 2>&1 & pids+=($!)
  "$B/coordinator" --listen 127.0.0.1:0 --addr-file run/c.addr > c.log 2>&1 & pids+=($!)
  while [ ! -s run/s.addr ] || [ ! -s run/c.addr ]; do sleep 0.01; done
  for i in $(seq "$workers"); do
    "$B/worker" --id "w$i" --coordinator "$(cat run/c.addr)" --afs "$(cat run/s.addr)" --cache-root "$work/cache" > "w$i.log" 2>&1 & pids+=($!)
  done
  sleep 1
  seq 2000000 2000400 > stage/candidates.txt
  "$B/worker" check stage/candidates.txt 2>/dev/null | head -n "$runs" > stage/primes.txt
  lat=()
  for p in $(cat stage/primes.txt); do
    echo "$p" > "stage/p$p.txt"
    t0=$(now)
    mv "stage/p$p.txt" data/input/
    until grep -qx "$p" primes.txt 2>/dev/null; do sleep 0.005; done
    t1=$(now)
    lat+=("$(echo "($t1 - $t0) * 1000" | bc -l | xargs printf '%.0f')")
  done
  kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true
  cd - > /dev/null; rm -rf "$work"
  echo "drop -> primes.txt latency (ms), $runs drops: ${lat[*]}"
  echo "median: $(printf '%s\n' "${lat[@]}" | median) ms"
  exit 0
fi
if [ "$dataset" = snap10k ]; then
  # Snapshot size and write time with 10,000 tasks queued (no workers, so all stay queued).
  work=$(mktemp -d "$PWD/target/bench-run.XXXXXX")
  mkdir -p "$work/run" "$work/data"
  cp -al "$data" "$work/data/input"; rm -f "$work/data/input/.done"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/run/cluster.key"
  export PRIMES_KEY_FILE="$work/run/cluster.key"
  cd "$work"
  "$B/coordinator" --listen 127.0.0.1:0 --snapshot-ms 500 > c.log 2>&1 & cpid=$!
  for _ in $(seq 600); do
    [ "$(grep -c 'snapshot written' c.log)" -ge 6 ] && break
    sleep 0.1
  done
  kill "$cpid"; wait "$cpid" 2>/dev/null || true
  "$B/coordinator" verify-snapshot snapshots/*.json | tail -1
  grep 'snapshot written' c.log | tail -4 | sed 's/.*seq=/seq=/'
  cd - > /dev/null; rm -rf "$work"
  exit 0
fi
if [ "${GROUP:-0}" = both ]; then
  # Simple mode (a group of one) and replicated mode (a group of three) in the same
  # invocation, in turn with `worker check`: check, simple, replicated, check, ... The
  # machine's speed drifts between invocations (seen: 0.44 s and 0.55 s for the same
  # `worker check`), so the ratios are taken per round (the runs side by side), then the
  # median of them.
  for r in $(seq "${WARMUP:-2}"); do GROUP=1 run_system 30000 > /dev/null; GROUP=3 run_system 30000 > /dev/null; done
  chk=(); one=(); three=(); one_cpu=(); three_cpu=(); r1=(); r3=()
  for r in $(seq "$runs"); do
    read -r tc _ <<< "$(run_check)"; chk+=("$tc")
    read -r t1s c <<< "$(GROUP=1 run_system 30000)"; one+=("$t1s"); one_cpu+=("$c")
    read -r t3s c <<< "$(GROUP=3 run_system 30000)"; three+=("$t3s"); three_cpu+=("$c")
    r1+=("$(echo "scale=3; $tc / $t1s" | bc -l)"); r3+=("$(echo "scale=3; $t1s / $t3s" | bc -l)")
  done
  med() { printf '%s\n' "$@" | median; }
  echo "worker check:          $(med "${chk[@]}") s   (runs: ${chk[*]})"
  echo "simple (group of 1):   $(med "${one[@]}") s   (runs: ${one[*]}; CPU median $(med "${one_cpu[@]}") s)"
  echo "replicated (of 3):     $(med "${three[@]}") s   (runs: ${three[*]}; CPU median $(med "${three_cpu[@]}") s)"
  echo "simple / worker check, per round:    median $(med "${r1[@]}")   (${r1[*]})"
  echo "replicated / simple, per round:      median $(med "${r3[@]}")   (${r3[*]})"
  exit 0
fi
sys=(); chk=(); sys_cpu=(); chk_cpu=()
# Discarded warm-up runs of the system (WARMUP, default 2): ext4 skips inodes freed in the
# last 60-300 s when it allocates new ones (`recently_deleted`), which made the first runs
# after any mass delete (such as this script's cleanup of the previous invocation) 2-3x
# slower, most of it in creating the reports; two runs of new files get past it.
for r in $(seq "${WARMUP:-2}"); do run_system 30000 > /dev/null; done
for r in $(seq "$runs"); do
  read -r t c <<< "$(run_check)"; chk+=("$t"); chk_cpu+=("$c")
  read -r t c <<< "$(run_system 30000)"; sys+=("$t"); sys_cpu+=("$c")
done
m_sys=$(printf '%s\n' "${sys[@]}" | median); m_chk=$(printf '%s\n' "${chk[@]}" | median)
m_sys_cpu=$(printf '%s\n' "${sys_cpu[@]}" | median); m_chk_cpu=$(printf '%s\n' "${chk_cpu[@]}" | median)
nums=$(cat "$data"/*.txt | wc -l)
echo "worker check (1 process, $((workers * threads)) threads): $m_chk s  = $(echo "scale=1; $nums / $m_chk / 1000000" | bc -l) M numbers/s, $(echo "scale=1; $bytes / $m_chk / 1000000" | bc -l) MB/s   (runs: ${chk[*]})"
echo "distributed system:                 $m_sys s  = $(echo "scale=1; $nums / $m_sys / 1000000" | bc -l) M numbers/s, $(echo "scale=1; $bytes / $m_sys / 1000000" | bc -l) MB/s   (runs: ${sys[*]})"
echo "system throughput / single-process: $(echo "scale=3; $m_chk / $m_sys" | bc -l)"
echo "CPU (user+sys, all processes): system $m_sys_cpu s, worker check $m_chk_cpu s; beyond check's: $(echo "($m_sys_cpu - $m_chk_cpu) * 1000000 / $files" | bc) us per file   (system runs: ${sys_cpu[*]})"
if [ "${FACTOR:-0}" = 1 ]; then
  t0=$(now)
  cat $(find "$data" -name '*.txt') | factor | awk 'NF==2{print $2}' | sort -u > /tmp/primes-factor.out
  t1=$(now)
  tf=$(echo "$t1 - $t0" | bc -l)
  echo "cat | factor | awk | sort -u:       $tf s  (system is $(echo "scale=1; $tf / $m_sys" | bc -l)x faster)"
fi
