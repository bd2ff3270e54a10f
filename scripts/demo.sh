# Sentra demo, run governed (as root): sentra-ctl run --policy /etc/sentra/policies/default.yaml -- /bin/sh scripts/demo.sh
# (Run through /bin/sh: under default deny a script file outside the allowed directories cannot itself
# be executed, which is the point.)
cgroup="$(grep '^0::' /proc/self/cgroup)"
case "$cgroup" in
    */sentra/*) echo "== inside Sentra's governed cgroup: $cgroup" ;;
    *) echo "not governed (cgroup ${cgroup#0::}): run this through sentra-ctl run, see the first line" >&2; exit 1 ;;
esac
echo "== allowed programs run:"
uname -sr
ls / > /dev/null && echo "ls: ran"
echo "== denied programs do not (EPERM with the lsm backend, SIGKILL with signal):"
for p in /usr/bin/sudo /usr/bin/su /usr/bin/mount /usr/bin/kmod /usr/bin/nsenter; do
    [ -e "$p" ] || continue
    "$p" --version > /dev/null 2>&1
    echo "$p -> exit status $?"
done
cp /usr/bin/true /tmp/sentra-demo-copy && /tmp/sentra-demo-copy
echo "/tmp/sentra-demo-copy (a copy of an allowed binary, outside the allowed directories) -> exit status $?"
rm -f /tmp/sentra-demo-copy
echo "== network (default.yaml: WhatsApp, OpenRouter and Gmail by name, loopback; nothing else):"
# Nothing here leaves the machine: the kernel steers the query to Sentra's resolver on loopback,
# which refuses the name without asking anyone. (Connects to denied addresses are shown by the test
# suite, inside network namespaces it creates: a demo never sends to an address outside this host.)
getent hosts example.com > /dev/null 2>&1
echo "resolve example.com -> exit status $? (the query was steered to Sentra's resolver, which refused it)"
exit 0
