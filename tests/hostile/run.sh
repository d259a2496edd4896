#!/usr/bin/env bash
# A hostile client against `tessera serve`: schemathesis (PyPI, installed
# under target/) sends what an OpenAPI document allows and what it
# forbids, and checks every answer against it.
#
# The admin API: schemathesis reads GET /admin/openapi.json and sends what it allows
# and what it forbids (every operation, its parameters' edges, random
# bodies, and sequences built from earlier answers: a user added, then
# changed, disabled, deleted, then asked for again). Every answer is
# checked against the document: never a 5xx; status codes, content
# types, headers and bodies as documented; what the document forbids
# refused; what was deleted gone; no operation open without a token.
# The server must still answer afterwards and log no panic.
#
# Left out: schemathesis's positive_data_acceptance, which expects every
# request the schema allows to succeed. Some refusals no schema can say:
# a listing's cursor that it never gave, an email holding a character
# that is not shown as written, a second key announced while two wait.
#
# An admin who revokes the key that signed its own token, deletes its own
# client or rotates its secret loses its access, as it should; so the
# run with sequences leaves those four operations out, and a second run
# sends them alone, with identifiers of its own making.
#
# The OAuth endpoints (token, introspection, revocation, userinfo, and
# the discovery and key documents), described for this script by
# tests/hostile/oauth-endpoints.json: as a confidential client with
# client_secret_basic, and userinfo with a person's access token (the
# password grant); tokens issued are introspected and revoked in
# sequences.
#
# The server keeps its data in SQLite, or with `postgres` as the third
# argument in a database this script makes (and drops) on the server
# TESSERA_TEST_DATABASE_URL names.
#
# Usage: tests/hostile/run.sh [path/to/tessera] [seconds for the first run] [sqlite|postgres]
set -euo pipefail
cd "$(dirname "$0")/../.."
tessera="${1:-}"
budget="${2:-60}"
backend="${3:-sqlite}"
if [ -z "$tessera" ]; then
  cargo build -q -p tessera-cli
  tessera="$PWD/target/debug/tessera"
fi
venv="$PWD/target/schemathesis-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==4.*"

# psql -qc "$1" on the server of TESSERA_TEST_DATABASE_URL, its parts
# handed over through libpq's environment: a password in the URL never
# reaches a command line.
psql_on_test_server() {
  "$venv/bin/python" - "$1" <<'PY'
import os, subprocess, sys, urllib.parse
url = urllib.parse.urlsplit(os.environ["TESSERA_TEST_DATABASE_URL"])
env = dict(os.environ)
for name, value in [("PGHOST", url.hostname), ("PGPORT", url.port), ("PGUSER", url.username),
                    ("PGPASSWORD", url.password), ("PGDATABASE", url.path.lstrip("/"))]:
    if value:
        env[name] = urllib.parse.unquote(str(value))
for key, value in urllib.parse.parse_qsl(url.query):
    if key == "sslmode":
        env["PGSSLMODE"] = value
sys.exit(subprocess.run(["psql", "-qc", sys.argv[1]], env=env).returncode)
PY
}

data="$(mktemp -d)"
pid=""
database=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$data"
  if [ -n "$database" ]; then
    psql_on_test_server "DROP DATABASE IF EXISTS $database" || true
  fi
}
trap cleanup EXIT
case "$backend" in
  sqlite) ;;
  postgres)
    : "${TESSERA_TEST_DATABASE_URL:?names the PostgreSQL server for the postgres run}"
    database="tessera_hostile_$$"
    psql_on_test_server "CREATE DATABASE $database"
    # The same server, the new database: the URL's last path segment replaced.
    export TESSERA_DATABASE_URL="${TESSERA_TEST_DATABASE_URL%/*}/$database"
    ;;
  *) echo "backend: sqlite or postgres, not $backend"; exit 2 ;;
esac
echo "-- $backend"

"$tessera" client add admin --data-dir "$data" --scope tessera:admin --access-ttl 1h --json \
  > "$data/admin.json"
"$tessera" client add svc --data-dir "$data" --grant client_credentials --grant password \
  --grant refresh_token --scope read --scope openid --scope profile --scope email \
  --access-ttl 1h --json > "$data/svc.json"
: > "$data/serve.out"
TESSERA_LOG=warn "$tessera" serve --data-dir "$data" --listen 127.0.0.1:0 \
  > "$data/serve.out" 2> "$data/serve.log" &
pid=$!
base=""
for _ in $(seq 300); do
  base="$(sed -n 's/^tessera: listening \([^ ]*\).*/http:\/\/\1/p' "$data/serve.out")"
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { cat "$data/serve.log"; echo "tessera serve did not start"; exit 1; }

# A fresh token of the client in $1 for the scope $2, read without
# printing it: client_credentials, or the password grant for the user
# named in H_USER (password in H_PASSWORD).
token() {
  "$venv/bin/python" - "$base" "$data/$1.json" "$2" <<'PY'
import base64, json, os, sys, urllib.error, urllib.parse, urllib.request
base, path, scope = sys.argv[1], sys.argv[2], sys.argv[3]
creds = json.load(open(path))
basic = base64.b64encode(f"{creds['client_id']}:{creds['client_secret']}".encode()).decode()
form = {"grant_type": "client_credentials", "scope": scope}
if os.environ.get("H_USER"):
    form.update(grant_type="password", username=os.environ["H_USER"], password=os.environ["H_PASSWORD"])
body = urllib.parse.urlencode(form).encode()
req = urllib.request.Request(base + "/oauth2/token", data=body, headers={"Authorization": "Basic " + basic})
try:
    print(json.load(urllib.request.urlopen(req))["access_token"])
except urllib.error.HTTPError as e:
    sys.exit(f"no token for {form['grant_type']}: {e.code} {e.read().decode()}")
PY
}

# schemathesis with the configuration $1 on the document $2, making every
# check but positive_data_acceptance, from the data directory (where it
# leaves what it keeps between runs). Tokens and secrets reach it through
# its environment, named in the configuration, never on a command line.
# One worker: with two, hypothesis (on CPython 3.11) now and then failed
# with an internal "AST constructor recursion depth mismatch" while two
# threads parsed its own sources at once, an error of the tool's that
# failed the run.
schemathesis() {
  local config="$1" document="$2"
  shift 2
  (cd "$data" && "$venv/bin/st" --no-color --config-file "$config" run "$document" \
    --checks all --exclude-checks positive_data_acceptance --workers 1 "$@")
}

# How many requests to routes matching the regular expression $1 the
# server answered with a 2xx status, from its own /metrics: a run whose
# credentials stopped reaching the server (a changed configuration
# syntax, an expired token) would see only documented 401s and report no
# failure, having tested nothing behind the authentication.
answered() {
  "$venv/bin/python" - "$base/metrics" "$1" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1]).read().decode()
line = re.compile(r'^tessera_http_requests_total\{(.*)\} (\d+)$')
total = 0
for l in text.splitlines():
    m = line.match(l)
    if not m:
        continue
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    if re.search(sys.argv[2], labels.get("route", "")) and labels.get("status", "").startswith("2"):
        total += int(m.group(2))
print(total)
PY
}
# Fails the run unless requests to routes matching $1 were answered 2xx.
authenticated() {
  local n
  n="$(answered "$1")"
  echo "   $n requests to $1 answered 2xx"
  [ "$n" -gt 0 ] || { echo "no request to $1 got past authentication"; exit 1; }
}

admin_config="$data/admin.toml"
printf 'headers = { Authorization = "Bearer ${TESSERA_ADMIN_TOKEN}" }\n' > "$admin_config"
st() {
  local admin_token
  admin_token="$(token admin tessera:admin)"
  TESSERA_ADMIN_TOKEN="$admin_token" schemathesis "$admin_config" "$base/admin/openapi.json" "$@"
}

echo "-- every operation but the four that end the caller's own access, with sequences ($budget s)"
st --max-time "$budget" \
  --exclude-path-regex '/revoke$|/rotate-secret$' \
  --exclude-name 'DELETE /admin/clients/{client_id}' \
  --exclude-name 'PATCH /admin/clients/{client_id}'
echo "-- those four, without sequences ($((budget / 2)) s)"
st --max-time "$((budget / 2))" --phases examples,coverage,fuzzing \
  --include-path-regex '/revoke$|/rotate-secret$|^/admin/clients/\{client_id\}$' \
  --exclude-method GET
authenticated '^/admin/'

echo "-- the OAuth endpoints, with sequences ($budget s)"
svc() { "$venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$data/svc.json" "$1"; }
oauth_config="$data/oauth.toml"
printf '[auth.openapi.basic]\nusername = "${H_ID}"\npassword = "${H_SECRET}"\n[auth.openapi.bearer]\nbearer = "${H_TOKEN}"\n' \
  > "$oauth_config"
svc_id="$(svc client_id)"
svc_secret="$(svc client_secret)"
# A person, added only now (the admin runs delete the users they find),
# whose token userinfo answers with claims.
user_password="$("$venv/bin/python" -c "import secrets; print(secrets.token_urlsafe(16))")"
printf '%s\n' "$user_password" | "$tessera" user add alice --data-dir "$data" --password-stdin \
  --name "Alice Example" --email alice@example.com --scope read --scope openid --scope profile \
  --scope email > /dev/null
svc_token="$(H_USER=alice H_PASSWORD="$user_password" token svc "openid profile email read")"
H_ID="$svc_id" H_SECRET="$svc_secret" H_TOKEN="$svc_token" schemathesis "$oauth_config" \
  "$PWD/tests/hostile/oauth-endpoints.json" --url "$base" --max-time "$budget"
authenticated '^/oauth2/userinfo$'                 # the bearer token
authenticated '^/oauth2/(introspect|revoke)$'      # the client's Basic credentials

http_status() { "$venv/bin/python" -c "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).status)" "$1"; }
[ "$(http_status "$base/healthz")" = 200 ] || { echo "the server no longer answers"; exit 1; }
if grep -n "panicked" "$data/serve.log"; then
  echo "the server panicked"; exit 1
fi
echo "hostile client: no failure"
