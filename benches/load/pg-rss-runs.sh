#!/usr/bin/env bash
# Resident memory of one `tessera serve` on PostgreSQL (a fresh schema of
# the local `test` database) across back-to-back `oha -z 10s -c 64` runs
# of client_credentials, with the audit rows written at the end of each
# run and 1 s and 3 s later (a backlog would show as rows still arriving).
# Usage: benches/load/pg-rss-runs.sh path/to/tessera [runs]   (needs oha, psql)
set -uo pipefail
BIN=$(realpath "$1"); RUNS=${2:-14}; PORT=18200
export PATH=$PATH:~/.cargo/bin
S=pgmem_$$
psql -q postgres://postgres@127.0.0.1:5432/test -c "CREATE SCHEMA $S" >/dev/null
export TESSERA_DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$S"
D=$(mktemp -d); cd $D
$BIN client add svc --scope read --json > svc.json 2>/dev/null
(TESSERA_LOG=warn $BIN serve --listen 127.0.0.1:$PORT > s.log 2>&1 &)
sleep 3; PID=$(pgrep -f "127.0.0.1:$PORT" | head -1)
AUTH=$(python3 -c "import json,base64;s=json.load(open('svc.json'));print(base64.b64encode(f\"{s['client_id']}:{s['client_secret']}\".encode()).decode())")
rows() { psql -qtA "postgres://postgres@127.0.0.1:5432/test" -c "SELECT count(*) FROM $S.audit_log"; }
echo "idle rss $(grep VmRSS /proc/$PID/status | awk '{print $2}') kB"
for i in $(seq 1 $RUNS); do
  oha --no-tui --output-format json -z 10s -c 64 -m POST -H "Authorization: Basic $AUTH" -T application/x-www-form-urlencoded -d grant_type=client_credentials http://127.0.0.1:$PORT/oauth2/token > oha.json
  R0=$(rows); sleep 1; R1=$(rows); sleep 2; R2=$(rows)
  python3 -c "
import json; v=json.load(open('oha.json')); d=v['statusCodeDistribution']
print('run $i: req/s', round(v['summary']['requestsPerSec']), 'codes', d, 'rss', $(grep VmRSS /proc/$PID/status | awk '{print $2}')//1024, 'MiB; audit rows at end', $R0, '+1s', $R1, '+3s', $R2)"
done
kill $PID; sleep 1; cd /; rm -rf $D
psql -q postgres://postgres@127.0.0.1:5432/test -c "DROP SCHEMA $S CASCADE" >/dev/null
