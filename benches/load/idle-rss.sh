#!/usr/bin/env bash
# Idle memory of one `tessera serve` build (issue 16): a fresh data
# directory is started once (it creates the keys), stopped, and started
# again; 4 s into the second start, VmRSS, its anonymous and file-backed
# parts, and the resident part of the binary's own code, in kB.
# Usage: benches/load/idle-rss.sh path/to/tessera [port]
# Run builds alternately (docs/benchmarks.md, "Idle memory").
set -euo pipefail
BIN=$(realpath "$1"); PORT=${2:-18090}
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT; cd "$D"
"$BIN" serve --listen 127.0.0.1:$PORT > first.log 2>&1 & PID=$!
sleep 3; kill $PID; wait $PID 2>/dev/null || true
"$BIN" serve --listen 127.0.0.1:$PORT > second.log 2>&1 & PID=$!
sleep 4
field() { awk -v f="$1:" '$1 == f {print $2}' /proc/$PID/status; }
TEXT=$(awk -v b="$BIN" '$0 ~ / r-xp / && $NF == b {f=1; next} f && /^Rss/ {print $2; f=0}' /proc/$PID/smaps)
echo "rss=$(field VmRSS) anon=$(field RssAnon) file=$(field RssFile) text=$TEXT"
kill $PID; wait $PID 2>/dev/null || true
