# Shared by setup.sh (developers, CI) and install.sh (servers): the Rust toolchain Sentra builds with,
# bpf-linker against nightly's own LLVM, and the release build. Sourced; every step checks first.
# Needs: log() defined by the caller; SENTRA_CACHE set.

export PATH="$HOME/.cargo/bin:$PATH"

# rustup with a stable and a nightly toolchain (nightly builds the BPF programs: -Z build-std).
ensure_rust() {
    if ! command -v rustup >/dev/null 2>&1; then
        log "installing rustup (stable toolchain)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    fi
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
        log "installing nightly with rust-src"
        rustup toolchain install nightly --profile minimal --component rust-src >/dev/null
    fi
}

# bpf-linker built against nightly's libLLVM (the same LLVM major as rustc's BPF backend).
ensure_bpf_linker() {
    bpf-linker --version >/dev/null 2>&1 && return 0
    log "building bpf-linker against nightly's libLLVM (a few minutes)"
    local tc so major prefix
    tc="$(rustc +nightly --print sysroot)"
    so="$(basename "$(compgen -G "$tc/lib/libLLVM.so.*" | head -n1)")"
    major="$(echo "$so" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/')"
    prefix="$SENTRA_CACHE/llvm"
    mkdir -p "$prefix/lib"
    ln -sf "$tc/lib/$so" "$prefix/lib/libLLVM.so"
    ln -sf "$tc/lib/$so" "$prefix/lib/$so"
    LLVM_PREFIX="$prefix" cargo install --locked bpf-linker --no-default-features --features "llvm-$major"
    bpf-linker --version >/dev/null
}

# himalaya, the mail client the controller's e-mail broker sends through: SMTP only (the broker only
# sends), into $1/bin unless this version is there already.
HIMALAYA_VERSION=2.2.1
build_himalaya() {
    local bin="$1/bin/himalaya"
    if [ -x "$bin" ] && "$bin" --version | grep -q "v$HIMALAYA_VERSION "; then return 0; fi
    log "building himalaya $HIMALAYA_VERSION from crates.io (SMTP only; a few minutes)"
    cargo install --locked --quiet --root "$1" --no-default-features --features smtp,rustls-ring \
        "himalaya@$HIMALAYA_VERSION"
}

# The release build of the controller, the shells and the BPF object (in the working directory).
build_release() {
    log "building Sentra (release)"
    cargo build --release --quiet -p sentra-ctl 2> >(grep -v '^warning: sentra-ctl@' >&2)
}
