# -*- coding: utf-8 -*-
"""Live migration between the VMs of the VM tier: raw commands that start a TCP client against the
container's echo service (``ckpt_workload``), wait for the workload's counter, and read the client's
log after the move. Used by ``tests/vm/test_migration.py`` and ``tests/vm/test_mixed_release.py``."""

from __future__ import annotations


CT_IP = "10.213.77.1"


PORT = 7000


STATUS = "/root/status"


CLIENT = "/root/ovz-mig-client.py"


CLIENT_LOG = "/root/ovz-mig-client.log"


CLIENT_STOP = "/root/ovz-mig-client.stop"


# The client: one connection, one line every 0.5 s, echoed back by the workload ("echo:" + line).
# It never reconnects: any error ends it (and its log says so). On the stop file: one last
# exchange, then a summary line.
CLIENT_PY = r'''
import os, socket, sys, time
src, dst, port, log_path, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
log = open(log_path, "w", buffering=1)
sock = socket.socket()
sock.bind((src, 0))
sock.settimeout(600)
sock.connect((dst, port))
local = "%s:%d" % sock.getsockname()
log.write("connected local=%s\n" % local)

def echo(token):
    sock.sendall(token.encode())
    want, got = ("echo:" + token).encode(), b""
    while len(got) < len(want):
        chunk = sock.recv(4096)
        if not chunk:
            log.write("closed\n")
            sys.exit(1)
        got += chunk
    if got != want:
        log.write("garbled %r\n" % got)
        sys.exit(1)

count, gap, last = 0, 0.0, time.monotonic()
try:
    while not os.path.exists(stop):
        echo("tick%d" % count)
        now = time.monotonic()
        count, gap, last = count + 1, max(gap, now - last), now
        log.write("n=%d\n" % count)
        time.sleep(0.5)
    echo("final")
    log.write("final-ok local=%s n=%d maxgap=%.1f\n" % (local, count, gap))
except Exception as exc:
    log.write("error %r\n" % exc)
    sys.exit(1)
'''


def wait_status(private: str, above: str) -> str:
    """A raw command: wait until the workload's counter is above ``above``, then print its status."""
    path = private + STATUS
    return ("for i in $(seq 300); do s=$(cat %s 2>/dev/null); n=${s#counter=}; n=${n%%%% *};"
            " [ -n \"$n\" ] && [ \"$n\" -gt %s ] && break; sleep 0.2; done; cat %s" % (path, above, path))


def status(text: str) -> dict:
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def client_start(ct_ip: str = CT_IP) -> str:
    """A raw command on the host: start the client (bound to this host's private address) against the
    container's echo service, wait for its second exchange, print its log."""
    return ("rm -f %s %s; cat > %s <<'EOF'\n%s\nEOF\nsetsid python3 %s {{ ovz_private_ip }} %s %d %s %s"
            " </dev/null >/dev/null 2>&1 & for i in $(seq 150); do grep -q '^n=2$' %s 2>/dev/null && break;"
            " sleep 0.2; done; cat %s"
            % (CLIENT_LOG, CLIENT_STOP, CLIENT, CLIENT_PY, CLIENT, ct_ip, PORT, CLIENT_LOG, CLIENT_STOP,
               CLIENT_LOG, CLIENT_LOG))


def client_after(ct_ip: str = CT_IP) -> str:
    """A raw command on the host: wait for 4 more exchanges (or the client's end), stop the client, print its
    last line and the route to the container."""
    # At least 4 more exchanges after the migration, then the last one and the summary. The client's
    # segments sent while the container was frozen were dropped (CRIU's network lock), so it goes on
    # only at its next retransmission: TCP's backoff makes that up to about the frozen time later,
    # and under TCG the frozen time is tens of seconds. Hence up to 5 minutes.
    return ("n=$(grep -c '^n=' %s); for i in $(seq 1500); do [ $(grep -c '^n=' %s) -ge $((n + 4)) ] && break;"
            " grep -q -e error -e closed %s && break; sleep 0.2; done; touch %s; for i in $(seq 150); do"
            " grep -q -e final-ok -e error -e closed %s && break; sleep 0.2; done; tail -n 1 %s;"
            " ip route get %s | head -n 1"
            % (CLIENT_LOG, CLIENT_LOG, CLIENT_LOG, CLIENT_STOP, CLIENT_LOG, CLIENT_LOG, ct_ip))
