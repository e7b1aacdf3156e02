#!/usr/bin/env bash
# The whole test suite: template checks, formatting, lints, unit tests and the integration tests
# that run against the local AWS stack (each starts its own moto on a free loopback port).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "cfn-lint template.yaml infra/*.yaml"
.venv/bin/cfn-lint template.yaml infra/customer-role.yaml infra/customer-events.yaml infra/agent-role.yaml
step "template rules (DLQs, partial batch failures, log groups, no wildcard IAM)"
.venv/bin/python infra/local/stack.py check

step "crate layering (scripts/layers.py)"
.venv/bin/python scripts/layers.py

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "API fuzzing: schemathesis against the served OpenAPI document"
cargo build --locked -p api --bin api
.venv/bin/python infra/local/api_check.py fuzz
