#!/usr/bin/env bash
# Interoperability of the tessera CLI with PyJWT, jwcrypto and cryptography
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
"$venv/bin/pip" install -q --disable-pip-version-check "PyJWT[crypto]==2.*" "jwcrypto==1.*"
exec "$venv/bin/python" tests/interop/interop.py "$tessera"
