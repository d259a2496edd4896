#!/usr/bin/env bash
# CPU per issued client_credentials token, idle and loaded RSS of one
# `tessera serve` build (issue 16): a fresh SQLite data directory, oha (by default
# 8 s at 32 connections) after a 2 s warm-up, the server's CPU time from
# /proc/PID/stat over the tokens it issued. Run builds alternately.
# Usage: benches/load/cpu-per-token.sh path/to/tessera [port [seconds [connections]]]
# (needs oha; the saturation is 10 s at 64 connections)
set -euo pipefail
BIN=$(realpath "$1"); PORT=${2:-18100}; SECS=${3:-8}; CONN=${4:-32}
D=$(mktemp -d); cd $D
$BIN client add svc --scope read --json > svc.json 2>/dev/null
TESSERA_LOG=warn $BIN serve --listen 127.0.0.1:$PORT > s.log 2>&1 &
PID=$!; sleep 3
IDLE=$(grep VmRSS /proc/$PID/status | awk '{print $2}')
AUTH=$(python3 -c "import json,base64;s=json.load(open('svc.json'));print(base64.b64encode(f\"{s['client_id']}:{s['client_secret']}\".encode()).decode())")
oha --no-tui -z 2s -c $CONN -m POST -H "Authorization: Basic $AUTH" -T application/x-www-form-urlencoded -d grant_type=client_credentials http://127.0.0.1:$PORT/oauth2/token > /dev/null
T0=$(awk '{print $14+$15}' /proc/$PID/stat)
oha --no-tui --output-format json -z ${SECS}s -c $CONN -m POST -H "Authorization: Basic $AUTH" -T application/x-www-form-urlencoded -d grant_type=client_credentials http://127.0.0.1:$PORT/oauth2/token > oha.json
T1=$(awk '{print $14+$15}' /proc/$PID/stat)
AFTER=$(grep VmRSS /proc/$PID/status | awk '{print $2}')
python3 -c "
import json; v=json.load(open('oha.json')); n=v['statusCodeDistribution'].get('200',0)
print('$BIN'.split('/')[-1], 'idle', $IDLE//1024, 'MiB; req/s', round(v['summary']['requestsPerSec']), '; cpu us/token', round(($T1-$T0)*1e4/n,1), '; rss after', $AFTER//1024, 'MiB')"
kill $PID; while kill -0 $PID 2>/dev/null; do sleep 0.2; done; rm -rf $D
