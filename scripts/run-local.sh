#!/usr/bin/env bash
# Runs Spotwise locally with no AWS account: builds the function binaries, starts the local
# AWS stack from template.yaml, seeds a tenant and invokes every function on its sample event.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins --locked
exec .venv/bin/python infra/local/demo.py --bin-dir target/debug "$@"
