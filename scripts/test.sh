#!/usr/bin/env bash
# The whole test suite (run as root on Debian 12): style, lints, unit tests, host-kernel integration
# tests (signal backend: this machine's kernel has no BPF LSM), then the same integration tests inside
# qemu on Debian's kernels (x86_64 6.12, 6.1 and 5.10; arm64 6.12 and 6.1), with the lsm backend and
# with the signal backend.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Each step says when it starts (minutes:seconds into the run), so a slow run shows where its time went.
step() { printf '\n=== [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }
# Line-buffered: progress lines (the VMs' start and end) show as they happen, not when the step ends.
quiet_build() { grep --line-buffered -v '^warning: sentra-ctl@' >&2; }

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

# fuzz TARGET SECONDS CORPUS… [-- LIBFUZZER FLAGS…]: a short run from the committed corpora. On a
# failure the whole report is shown, with the input that failed (base64), so that it can be added to
# the corpus and replayed.
fuzz() {
    local target="$1" seconds="$2" log corpus status=0
    shift 2
    log="$(mktemp)" corpus="$(mktemp -d)"
    local dirs=() flags=()
    while (($#)) && [[ "$1" != -- ]]; do dirs+=("$1"); shift; done
    (($#)) && shift && flags=("$@")
    (cd fuzz && AYA_BUILD_SKIP=1 cargo +nightly fuzz run -s none "$target" "$corpus" "${dirs[@]}" \
        -- -max_total_time="$seconds" "${flags[@]}") > "$log" 2>&1 || status=$?
    if ((status == 0)); then
        tail -n 3 "$log"
    else
        tail -n 60 "$log"
        for artifact in fuzz/artifacts/"$target"/*; do
            [[ -f "$artifact" ]] || continue
            printf '%s (base64, first 8 KiB):\n' "$artifact"
            head -c 8192 "$artifact" | base64
        done
    fi
    rm -rf "$corpus" "$log"
    return "$status"
}

step "fuzzing the policy loader (30 s)"
fuzz policy_load "${SENTRA_FUZZ_SECONDS:-30}" ../tests/corpus/policy ../policies

step "fuzzing the shell index: required literals are in every match, exact names are exact (15 s)"
fuzz required_literals "${SENTRA_FUZZ_INDEX_SECONDS:-15}" ../tests/corpus/required

step "fuzzing the shell evaluator: a verdict for every line, no crash, no hang (15 s)"
fuzz shell_line "${SENTRA_FUZZ_SHELL_SECONDS:-15}" ../tests/corpus/shell-lines -- -timeout=5 -max_len=65536

# The full suite on x86_64 6.12/lsm; the kernel core or a smoke set elsewhere (xtask/src/vm.rs, `scope`):
# 6.1, bullseye's 5.10 (the seed's 5.15 kernels build BPF LSM but leave it off: 5.10/lsm boots with
# bpf added to lsm=), and arm64, cross-built (6.1 there lists BPF LSM but cannot attach it, so auto
# must choose signal).
step "integration tests in qemu: x86_64 6.12, 6.1 and 5.10, arm64 6.12 and 6.1; lsm and signal backends"
cargo xtask vm-test --configs \
    6.12/lsm,6.12/signal,6.1/lsm,6.1/signal,5.10/lsm,5.10/signal,arm64-6.12/lsm,arm64-6.1/signal \
    2> >(quiet_build)
