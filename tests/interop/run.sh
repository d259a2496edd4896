#!/usr/bin/env bash
# Interoperability of the tessera CLI with PyJWT, jwcrypto and cryptography,
# and of `tessera serve` with authlib's OAuth client and PyJWT's JWKS client
# (installed from PyPI into a virtual environment under target/).
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
