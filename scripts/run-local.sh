#!/usr/bin/env bash
# Runs Spotwise locally with no AWS account. First the whole flow on a fresh local stack
# (spotwise-demo): an account with two EKS clusters in moto, discovery, the shipped price data,
# the agent against a simulated cluster, optimize, approve, the agent's actions, a spot
# interruption and its drain, signed webhooks to a local receiver and the savings report, with a
# summary and an HTML report. Then every function binary on its sample event from events/.
# It ends serving the API and the web console on the demo's data, printing a URL that opens the
# console signed in to the demo tenant; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins --locked
.venv/bin/python infra/local/demo.py --bin-dir target/debug "$@"
echo
exec target/debug/spotwise-demo --report target/spotwise-demo.html --console
