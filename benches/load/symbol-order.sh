#!/bin/bash
# Regenerate crates/cli/symbol-order.txt: the functions `tessera serve`
# runs from its start until it is idle, in the order it first runs them,
# so that the linker lays them out together (crates/cli/build.rs) and an
# idle server maps few pages of its code. See docs/benchmarks.md.
#
#   benches/load/symbol-order.sh [BINARY]   (default: target/release/tessera)
#
# Needs valgrind. Run it after changes that move startup code around,
# then rebuild; a stale list costs memory, never correctness (symbols it
# names that no longer exist are skipped).
#
#   benches/load/symbol-order.sh --check [BINARY]
#
# says how much of the list a build still finds: the names of generic
# functions (most of the list) carry hashes that change with almost any
# change to the code or the dependencies, so the list goes stale as the
# code moves (one 70 % found left an idle server at 17-18 MiB, against
# 11-12 with the list made again). Make it again before a release.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${1:-}" = "--check" ]; then
    bin=$(realpath "${2:-$root/target/release/tessera}")
    list="$root/crates/cli/symbol-order.txt"
    found=$(nm --defined-only "$bin" | awk '$2 ~ /^[tT]$/ {print $3}' | sort -u \
        | comm -12 - <(sort -u "$list") | wc -l)
    total=$(sort -u "$list" | wc -l)
    echo "$found of $total functions in crates/cli/symbol-order.txt are in $bin ($((100 * found / total)) %)"
    exit 0
fi
bin=$(realpath "${1:-$root/target/release/tessera}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
cd "$work"
# A first start creates the data directory; the second is the one traced.
"$bin" serve --listen "127.0.0.1:$port" > "$work/first.log" 2>&1 &
first=$!
sleep 3
if ! kill -TERM "$first" 2>/dev/null; then
    echo "the first start failed:" >&2
    cat "$work/first.log" >&2
    exit 1
fi
wait "$first" || true
valgrind --tool=callgrind --demangle=no --dump-line=no --compress-strings=no \
    --callgrind-out-file="$work/cg.out" \
    "$bin" serve --listen "127.0.0.1:$port" > "$work/vg.log" 2>&1 &
traced=$!
# Under valgrind a start takes a while; then a few seconds of idle.
for _ in $(seq 1 120); do
    grep -q "issuer" "$work/vg.log" 2>/dev/null && break
    sleep 1
done
sleep 10
kill -TERM "$traced"
wait "$traced" || true
# Functions of the binary itself (callgrind's `ob=` names the object of
# the `fn=` lines after it), first seen first, that the binary defines.
nm --defined-only "$bin" | awk '$2 ~ /^[tT]$/ {print $3}' | sort -u > "$work/defined"
awk -v bin="$bin" '
    /^ob=/ { ob = substr($0, 4) }
    /^fn=/ { if (ob == bin) { name = substr($0, 4); if (!(name in seen)) { seen[name] = 1; print name } } }
' "$work/cg.out" | grep -Fxf "$work/defined" > "$root/crates/cli/symbol-order.txt"
echo "$(wc -l < "$root/crates/cli/symbol-order.txt") functions in crates/cli/symbol-order.txt"
