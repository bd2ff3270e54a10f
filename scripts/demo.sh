# Sentra demo, run governed (as root): sentra-ctl run --policy /etc/sentra/policies/default.yaml -- /bin/sh scripts/demo.sh
# (Run through /bin/sh: under default deny a script file outside the allowed directories cannot itself
# be executed, which is the point.)
echo "== inside Sentra's governed cgroup: $(grep '^0::' /proc/self/cgroup)"
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
getent hosts example.com > /dev/null 2>&1
echo "resolve example.com -> exit status $? (the query was steered to Sentra's resolver, which refused it)"
bash -c 'exec 3<>/dev/tcp/1.1.1.1/443' 2> /dev/null
echo "connect to 1.1.1.1:443 -> exit status $? (EPERM from the kernel: no rule allows that address)"
exit 0
