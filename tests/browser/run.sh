#!/usr/bin/env bash
# A real browser through the sign-in pages: Debian's chromium (installed
# with apt when missing; CI runs as root) driven by playwright-core from npm
# (installed under target/). Screenshots go to target/browser/.
# Usage: tests/browser/run.sh   (builds the binaries it needs)
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null; then
  echo "== installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build -q -p tessera-cli -p store-api -p web-app
node_dir="$PWD/target/browser-node"
mkdir -p "$node_dir"
if [ ! -d "$node_dir/node_modules/playwright-core" ]; then
  (cd "$node_dir" && npm install --silent --no-audit --no-fund "playwright-core@1" >/dev/null)
fi
# ES modules resolve packages next to the script: run it from there.
cp tests/browser/signin.mjs "$node_dir/signin.mjs"
CHROMIUM="$(command -v chromium)" node "$node_dir/signin.mjs" "$PWD/target"
