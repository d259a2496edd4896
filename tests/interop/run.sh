#!/usr/bin/env bash
# Interoperability of the tessera CLI with PyJWT, jwcrypto and cryptography,
# of `tessera serve` with authlib's OAuth client and PyJWT's JWKS client
# (installed from PyPI into a virtual environment under target/), and of
# its sign-in with openid-client, the certified relying-party library for
# Node.js (installed from npm under target/).
# Usage: tests/interop/run.sh [path/to/tessera]   (default: builds it)
set -euo pipefail
cd "$(dirname "$0")/../.."
tessera="${1:-}"
if [ -z "$tessera" ]; then
  cargo build -q -p tessera-cli
  tessera="$PWD/target/debug/tessera"
fi
venv="$PWD/target/interop-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "PyJWT[crypto]==2.*" "jwcrypto==1.*" \
  "authlib==1.*" "requests==2.*"
"$venv/bin/python" tests/interop/interop.py "$tessera"
"$venv/bin/python" tests/interop/server.py "$tessera"
node_dir="$PWD/target/interop-node"
mkdir -p "$node_dir"
if [ ! -d "$node_dir/node_modules/openid-client" ]; then
  (cd "$node_dir" && npm install --silent --no-audit --no-fund "openid-client@6" "jose@6" >/dev/null)
fi
# ES modules resolve packages next to the script: run it from there.
cp tests/interop/oidc.mjs "$node_dir/oidc.mjs"
node "$node_dir/oidc.mjs" "$tessera"
