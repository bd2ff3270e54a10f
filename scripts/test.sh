#!/usr/bin/env bash
# The whole test suite (run as root on Debian 12): style, lints, unit tests, host-kernel integration
# tests (signal backend: this machine's kernel has no BPF LSM), then the same integration tests inside
# qemu on the Debian 6.1 and 6.12 kernels, with the lsm backend and with the signal backend.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
step() { printf '\n=== %s\n' "$*" >&2; }
quiet_build() { grep -v '^warning: sentra-ctl@' >&2; }

step "setup (idempotent)"
bash scripts/setup.sh

step "rustfmt"
cargo +nightly fmt --all --check

step "clippy (userspace, pedantic, warnings are errors)"
cargo clippy --release --workspace --exclude sentra-ebpf --all-targets -- -D warnings 2> >(quiet_build)
step "clippy (BPF programs)"
(cd sentra-ebpf && cargo +nightly clippy --release -Z build-std=core -- -D warnings)

step "unit tests and host-kernel integration tests"
SENTRA_TEST_BACKEND=signal SENTRA_EXPECT_BACKEND=signal SENTRA_STORM="${SENTRA_STORM:-2000}" \
    cargo test --release --workspace --exclude sentra-ebpf -- --test-threads=1 2> >(quiet_build)

step "fuzzing the policy loader (30 s)"
corpus="$(mktemp -d)"
(cd fuzz && AYA_BUILD_SKIP=1 cargo +nightly fuzz run -s none policy_load "$corpus" ../tests/corpus/policy ../policies \
    -- -max_total_time="${SENTRA_FUZZ_SECONDS:-30}" 2>&1 | tail -n 3)
rm -rf "$corpus"

step "fuzzing the shell index: required literals are in every match, exact names are exact (15 s)"
corpus="$(mktemp -d)"
(cd fuzz && AYA_BUILD_SKIP=1 cargo +nightly fuzz run -s none required_literals "$corpus" ../tests/corpus/required \
    -- -max_total_time="${SENTRA_FUZZ_INDEX_SECONDS:-15}" 2>&1 | tail -n 3)
rm -rf "$corpus"

step "fuzzing the shell evaluator: a verdict for every line, no crash, no hang (15 s)"
corpus="$(mktemp -d)"
(cd fuzz && AYA_BUILD_SKIP=1 cargo +nightly fuzz run -s none shell_line "$corpus" ../tests/corpus/shell-lines \
    -- -max_total_time="${SENTRA_FUZZ_SHELL_SECONDS:-15}" -timeout=5 -max_len=65536 2>&1 | tail -n 3)
rm -rf "$corpus"

step "integration tests in qemu: Debian 6.1 and 6.12 kernels, lsm and signal backends"
cargo xtask vm-test 2> >(quiet_build)

