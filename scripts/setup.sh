#!/usr/bin/env bash
# Sentra developer/CI setup for a fresh Debian 12 machine (run as root).
# Idempotent: every step checks first, so a second run takes seconds.
#   - Debian packages the build and the VM tests need
#   - test kernels (Debian 6.1 and 6.12 cloud), unpacked into $SENTRA_CACHE (not installed:
#     no initramfs/grub hooks run, the host's boot is untouched)
#   - rust-src for nightly, bpf-linker built against nightly's own libLLVM (same LLVM major as rustc)
#   - a release build of the workspace
set -euo pipefail

SENTRA_CACHE="${SENTRA_CACHE:-/var/cache/sentra-dev}"
export PATH="$HOME/.cargo/bin:$PATH"
log() { printf '[setup] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "setup.sh must run as root (it installs Debian packages)" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------------------------
PKGS=(qemu-system-x86 busybox-static cpio iproute2 jq gcc libc6-dev pkg-config)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- test kernels --------------------------------------------------------------------------------
# Names drift with Debian security updates: resolve them now instead of hard-coding.
fetch_kernel() { # $1 = short name (6.1 | 6.12), $2 = package name
    local dir="$SENTRA_CACHE/kernels/$1"
    if compgen -G "$dir/boot/vmlinuz-*" >/dev/null; then return 0; fi
    log "fetching kernel $1 ($2)"
    local tmp; tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -qq "$2")
    mkdir -p "$dir"
    dpkg -x "$tmp"/*.deb "$dir"
    rm -rf "$tmp"
}
if ! compgen -G "$SENTRA_CACHE/kernels/6.1/boot/vmlinuz-*" >/dev/null \
    || ! compgen -G "$SENTRA_CACHE/kernels/6.12/boot/vmlinuz-*" >/dev/null; then
    apt-get update -qq
    k61="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-6\.1/ {print $2; exit}')"
    k612="$(apt-cache search --names-only '^linux-image-6\.12\..*-cloud-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -n1)"
    [ -n "$k61" ] || { echo "cannot resolve the Debian 6.1 cloud kernel package" >&2; exit 1; }
    [ -n "$k612" ] || { echo "cannot resolve the Debian 6.12 cloud kernel package" >&2; exit 1; }
    fetch_kernel 6.1 "$k61"
    fetch_kernel 6.12 "$k612"
fi

# --- Rust: nightly rust-src and bpf-linker ------------------------------------------------------
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi
if ! bpf-linker --version >/dev/null 2>&1; then
    log "building bpf-linker against nightly's libLLVM (about a minute)"
    TC="$(rustc +nightly --print sysroot)"
    SO="$(basename "$(compgen -G "$TC/lib/libLLVM.so.*" | head -n1)")"
    LLVM_MAJOR="$(echo "$SO" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/')"
    LLVM_PREFIX="$SENTRA_CACHE/llvm"
    mkdir -p "$LLVM_PREFIX/lib"
    ln -sf "$TC/lib/$SO" "$LLVM_PREFIX/lib/libLLVM.so"
    ln -sf "$TC/lib/$SO" "$LLVM_PREFIX/lib/$SO"
    LLVM_PREFIX="$LLVM_PREFIX" cargo install --locked bpf-linker --no-default-features --features "llvm-$LLVM_MAJOR"
    bpf-linker --version >/dev/null
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (the policy loader's fuzz target runs in the test suite)"
    cargo install --locked cargo-fuzz
fi

# --- build and install --------------------------------------------------------------------------
if [ "${SENTRA_SETUP_NO_BUILD:-0}" != 1 ]; then
    cd "$(dirname "$0")/.."
    log "building the workspace (release)"
    cargo build --release --quiet -p sentra-ctl 2> >(grep -v '^warning: sentra-ctl@' >&2)
    # Binaries to /usr/local/bin; shipped policies to /etc/sentra/policies (refreshed: they are ours);
    # /etc/sentra/policy.yaml (the one sentra-shell reads by default) only if there is none yet.
    for bin in target/release/sentra-ctl target/release/sentra target/release/sentra-shell; do
        [ -x "$bin" ] && install -m 0755 -o root -g root "$bin" /usr/local/bin/
    done
    install -d -m 0755 -o root -g root /etc/sentra /etc/sentra/policies
    install -m 0644 -o root -g root policies/*.yaml /etc/sentra/policies/
    [ -e /etc/sentra/policy.yaml ] || install -m 0644 -o root -g root policies/default.yaml /etc/sentra/policy.yaml
    install -d -m 0700 -o root -g root /var/log/sentra
    # Checking the policy as root also stores its parsed form in /var/cache/sentra/policy, which
    # sentra-shell (run as the agent) reads instead of parsing the YAML for every command.
    /usr/local/bin/sentra-ctl policy check /etc/sentra/policy.yaml > /dev/null \
        || log "WARNING: /etc/sentra/policy.yaml does not pass 'sentra-ctl policy check' (see above)"
fi
log "setup complete"
