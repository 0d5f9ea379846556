#!/usr/bin/env bash
# Fetch throughput of a 1 GiB file through afs-server + client cache, against reading the
# same file from local disk, in the same run. Usage: bench/afs_fetch.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --bins -q
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/root" "$work/run"
python3 -c "
import random
random.seed(1)
with open('$work/root/big.txt','w') as f:
    n=0
    while n < 1<<30:
        s='%d\n' % random.getrandbits(64); f.write(s); n+=len(s)
"
size=$(stat -c %s "$work/root/big.txt")
python3 -c "import os;print(os.urandom(32).hex())" > "$work/run/key"
export PRIMES_KEY_FILE="$work/run/key"
target/release/afs-server --root "$work/root" --addr-file "$work/run/addr" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/run/addr" ] && break; sleep 0.1; done
[ -s "$work/run/addr" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }
addr=$(cat "$work/run/addr")
cat "$work/root/big.txt" > /dev/null # warm the page cache for every contender
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
cat_t=(); cold_t=(); reval_t=()
for i in $(seq "$runs"); do
  cat_t+=("$(t cat "$work/root/big.txt")")
  rm -rf "$work/cache"
  cold_t+=("$(t target/release/afs-fetch --server "$addr" --cache-root "$work/cache" big.txt)")
  reval_t+=("$(t target/release/afs-fetch --server "$addr" --cache-root "$work/cache" big.txt)")
done
mbps() { echo "scale=1; $size / $1 / 1000000" | bc -l; }
c=$(printf '%s\n' "${cat_t[@]}" | median); f=$(printf '%s\n' "${cold_t[@]}" | median); r=$(printf '%s\n' "${reval_t[@]}" | median)
echo "file: $size bytes; runs: $runs (medians)"
echo "cat (local disk, page cache warm): $c s = $(mbps "$c") MB/s"
echo "afs fetch, empty client cache:     $f s = $(mbps "$f") MB/s  ($(echo "scale=2; $f / $c" | bc -l)x cat's time)"
echo "afs open, cache warm (revalidate): $r s  (not_modified, no body transferred)"
