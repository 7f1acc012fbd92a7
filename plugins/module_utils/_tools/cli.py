# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""``ovzctl``: the engine from a shell, in vzctl's vocabulary.

    ovzctl [--data-dir D] [--cgroup-parent P] COMMAND NAME [...]

    create NAME --ostemplate T [--layout image|directory] [--hostname H] [--diskspace S] [--privileged]
    start NAME [--wait]        stop NAME [--timeout S]      restart NAME
    suspend NAME               checkpoint (CRIU) into <data-dir>/dump/NAME, then stop (vzctl suspend);
                               list and status show it suspended, and start resumes it (as vzctl start)
    resume NAME                restore from that checkpoint; it is removed once running (vzctl resume)
    freeze NAME / thaw NAME    stop / continue every process in place (cgroup freezer), nothing saved
    destroy NAME [--force]     a running or frozen container is refused unless --force (which stops it first)
    set NAME [--ipadd A]... [--ipdel A|all]... [--dad-timeout S]
                               add and remove addresses, live and stored (vzctl set --ipadd/--ipdel --save); an
                               address a neighbour answers for (duplicate-address probe, S seconds, 1) is refused
    status NAME                list [--json]
    exec [-t|-T] [--timeout S] NAME 'COMMAND LINE'   run by /bin/sh -c inside (as vzctl exec)
    exec [-t|-T] [--timeout S] NAME CMD ARG...       CMD with its arguments, no shell (two or more words)
                               a pty of the container's own when stdin is a terminal (as vzctl exec) or
                               with -t, pipes with -T or otherwise; the caller's stdio is relayed, never handed in;
                               a frozen container is refused (thaw it first)
    enter NAME                 (an interactive shell inside, on a pty of the container's own)
    bcd start|stop|status      the live beancounters view (bcd.py) of this data dir:
                               [--mountpoint M] [--pidfile P] [--logfile L] [--interval S] [--foreground]
    boot [--wait] [--json]     (start the node's onboot containers, higher bootorder first)

Exit status: 0 on success, 1 on failure with the message on stderr, and for
``exec`` the command's own status (15 when ``--timeout`` killed it). As in vzctl, a NAME that does not exist exits 14 with every
command (``status`` still prints its JSON, state ``absent``), and ``destroy`` of a running
container without ``--force`` exits 32. ``boot`` exits 1 when any container failed to start;
``bcd status`` exits 3 when the daemon does not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, TextIO

from .._engine.base.errors import ContainerRunning, NoSuchContainer, NotRoot, OvzError
from .._engine.base.sizes import parse_pair
from .._engine.base.states import State
from .._engine.container.manager import ContainerManager, require_root

# vzctl's exit codes (its vzerror.h), so that scripts written for vzctl read ours alike.
EXIT_NOT_FOUND = 14     # VZ_NOVECONFIG: "Container config file does not exist"
EXIT_RUNNING = 32       # VZ_VE_RUNNING: "Container is currently running. Stop it first."
EXIT_EXEC_TIMEOUT = 15  # VZ_EXEC_TIMEOUT
# The commands that take no container NAME, or one that need not exist yet.
UNNAMED = ("create", "list", "boot", "bcd")


def _say(text: str, stream: Optional[TextIO] = None) -> None:
    # Plain writes: this module lives in module_utils, where print() is reserved.
    (stream or sys.stdout).write(text + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovzctl", description="OpenVZ-style containers (ovz.containers engine)")
    parser.add_argument("--data-dir", default="/var/lib/ovz")
    parser.add_argument("--cgroup-parent", default="auto")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create")
    create.add_argument("name")
    create.add_argument("--ostemplate", required=True)
    create.add_argument("--layout", default="image", choices=["image", "directory"])
    create.add_argument("--hostname")
    create.add_argument("--diskspace")
    kind = create.add_mutually_exclusive_group()
    kind.add_argument("--unprivileged", dest="privileged", action="store_false", default=False,
                      help="its own user namespace and id block (the default)")
    kind.add_argument("--privileged", action="store_true",
                      help="root inside is host root, confined by capabilities and cgroups only")
    start = commands.add_parser("start")
    start.add_argument("name")
    start.add_argument("--wait", action="store_true", help="wait until the startup scripts have run")
    stop = commands.add_parser("stop")
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float)
    for simple in ("restart", "status", "enter", "freeze", "thaw"):
        commands.add_parser(simple).add_argument("name")
    destroy = commands.add_parser("destroy", help="remove the container; a running one only with --force")
    destroy.add_argument("name")
    destroy.add_argument("--force", action="store_true", help="stop a running or frozen container first")
    suspend = commands.add_parser("suspend", help="checkpoint to <data-dir>/dump/NAME and stop (vzctl suspend)")
    suspend.add_argument("name")
    suspend.add_argument("--no-tcp-established", dest="tcp_established", action="store_false",
                         help="do not carry established TCP connections (they are reset)")
    resume = commands.add_parser("resume", help="restore the suspended container (vzctl resume)")
    resume.add_argument("name")
    settings = commands.add_parser("set", help="change a container's addresses (vzctl set --ipadd/--ipdel --save)")
    settings.add_argument("name")
    settings.add_argument("--ipadd", action="append", default=[], metavar="ADDRESS",
                          help="give the container this address (repeatable)")
    settings.add_argument("--ipdel", action="append", default=[], metavar="ADDRESS",
                          help="take this address away, or every one with 'all' (repeatable)")
    settings.add_argument("--dad-timeout", type=float, default=None, metavar="SECONDS",
                          help="how long a new address is probed for on its segment (1; 0: no probe)")
    listing = commands.add_parser("list")
    listing.add_argument("--json", action="store_true", help="every container's facts as a JSON list")
    boot = commands.add_parser("boot", help="start the onboot containers in boot order (host boot entry point)")
    boot.add_argument("--wait", action="store_true", help="wait for each container's startup scripts")
    boot.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each boot (with --wait)")
    boot.add_argument("--json", action="store_true")
    bcd = commands.add_parser("bcd", help="the live beancounters view inside containers (a host daemon)")
    bcd.add_argument("action", choices=["start", "stop", "status"])
    bcd.add_argument("--mountpoint", help="where its FUSE filesystem goes (<data-dir>/bcd)")
    bcd.add_argument("--pidfile", help="its pid file, locked while it runs (<data-dir>/bcd.pid)")
    bcd.add_argument("--logfile", help="its log (<data-dir>/bcd.log)")
    bcd.add_argument("--interval", type=float, default=2.0,
                     help="seconds between passes that bind the view into containers started before it (2)")
    bcd.add_argument("--foreground", action="store_true", help="start: run in this process (for a service manager)")
    execute = commands.add_parser("exec")
    execute.add_argument("-t", dest="tty", action="store_const", const=True,
                         help="a pty inside even when stdin is not a terminal")
    execute.add_argument("-T", dest="tty", action="store_const", const=False,
                         help="pipes even when stdin is a terminal")
    execute.add_argument("--timeout", type=float, default=None, metavar="S",
                         help="kill the command (with its process group) after S seconds; exit status 15")
    execute.add_argument("name")
    execute.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def _boot(manager: ContainerManager, args: argparse.Namespace) -> int:
    from .._engine.ops.boot import boot
    report = boot(manager, wait_boot=args.wait, timeout=args.timeout)
    if args.json:
        _say(json.dumps(report, sort_keys=True))
    else:
        for entry in report:
            if entry["action"] == "started":
                _say("Starting container %s (bootorder %d)" % (entry["name"], entry["bootorder"]))
            elif entry["action"] == "running":
                _say("Container %s is already running" % entry["name"])
            else:
                _say("ovzctl: container %s failed to start: %s" % (entry["name"], entry["error"]), sys.stderr)
        _say("boot: %d started, %d already running, %d failed"
             % tuple(sum(1 for e in report if e["action"] == a) for a in ("started", "running", "failed")))
    return 1 if any(e["action"] == "failed" for e in report) else 0


def _start(manager: ContainerManager, args: argparse.Namespace) -> None:
    """vzctl start / restart: a suspended container is resumed with its memory (through the checkpoint
    engine, loaded only for these two)."""
    from .._engine.ops import lifecycle
    if args.command == "restart":
        lifecycle.restart(manager, args.name)
        return
    suspended = manager.status(args.name) == State.SUSPENDED
    if not lifecycle.start(manager, args.name, wait_boot=args.wait):
        _say("Container %s is already running" % args.name, sys.stderr)
    elif suspended:
        _say("Container %s was suspended: resumed with its memory" % args.name)


def _suspend_resume(manager: ContainerManager, args: argparse.Namespace) -> None:
    """vzctl suspend / resume: a CRIU checkpoint in <data-dir>/dump/NAME, the container stopped in between."""
    from .._engine.ops.checkpoint import Checkpointer
    checkpointer = Checkpointer(manager)
    if args.command == "suspend":
        _say("Setting up checkpoint of container %s..." % args.name)
        report = checkpointer.suspend(args.name, tcp_established=args.tcp_established)
        _say("Container %s is suspended into %s (frozen %.1f ms, %d bytes)"
             % (args.name, report["images_dir"], report["frozen_ms"], report["size"]))
    else:
        _say("Restoring container %s..." % args.name)
        report = checkpointer.resume(args.name)
        _say("Container %s is resumed (init pid %d, restore %.1f ms)"
             % (args.name, report["init_pid"], report["timings"].get("total_ms", 0.0)))


def _set_addresses(manager: ContainerManager, args: argparse.Namespace) -> None:
    """vzctl set --ipadd/--ipdel: the same plan and apply steps as ovz_network, the probe included."""
    from .._engine.ops import converge
    from .._engine.resources import network
    manager.load(args.name)   # fails for a name that does not exist, before its lock is made
    with manager.lock(args.name):
        stored = manager.load(args.name).network
        current = list(stored.get("ip_address") or [])
        mode = stored.get("netif_mode") or "routed"
        drop = set()
        for text in args.ipdel:
            drop |= {network.parse_address(a, mode).ip for a in current} if text == "all" else \
                {network.parse_address(text, mode).ip}
        wanted = [a for a in current if network.parse_address(a, mode).ip not in drop] + list(args.ipadd)
        step = converge.plan_network(manager, args.name, {"state": "present", "ip_address": wanted,
                                                          "dad_timeout": args.dad_timeout})
        if step.plan is not None and step.plan.changed:
            converge.apply_network(manager, step, lambda text: _say("ovzctl: warning: " + text, sys.stderr))


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        require_root()
    except NotRoot as exc:
        _say("ovzctl: %s" % exc, sys.stderr)
        return 1
    if args.command == "bcd":
        return _bcd(args)
    manager = ContainerManager(args.data_dir, args.cgroup_parent)
    try:
        if args.command not in UNNAMED and not manager.exists(args.name):
            if args.command == "status":
                _say(json.dumps(manager.facts(args.name), indent=2, sort_keys=True))
            raise NoSuchContainer("container %s does not exist" % args.name, "name")
        if args.command == "create":
            manager.create(args.name, args.ostemplate, layout=args.layout, hostname=args.hostname,
                           diskspace=parse_pair(args.diskspace, "diskspace") if args.diskspace else None,
                           unprivileged=not args.privileged)
            if args.privileged:
                from .._engine.kernel import lsm
                from .._engine.ops import converge
                _say("ovzctl: warning: " + converge.privileged_warning(args.name, lsm.confining()), sys.stderr)
        elif args.command in ("start", "restart"):
            _start(manager, args)
        elif args.command == "stop":
            if not manager.stop(args.name, timeout=args.timeout):
                _say("Container %s was not running" % args.name, sys.stderr)
        elif args.command in ("suspend", "resume"):
            _suspend_resume(manager, args)
        elif args.command == "freeze":
            manager.freeze(args.name)
        elif args.command == "thaw":
            manager.thaw(args.name)
        elif args.command == "destroy":
            manager.destroy(args.name, stop_running=args.force)
        elif args.command == "set":
            _set_addresses(manager, args)
        elif args.command == "status":
            _say(json.dumps(manager.facts(args.name), indent=2, sort_keys=True))
        elif args.command == "list" and args.json:
            _say(json.dumps(manager.list(), sort_keys=True))
        elif args.command == "boot":
            return _boot(manager, args)
        elif args.command == "list":
            for facts in manager.list():
                _say("%-20s %-8s %-8s %s" % (facts["name"], facts["state"], facts.get("init_pid") or "-",
                                             facts.get("hostname", "")))
        elif args.command == "exec":
            if not args.argv:
                raise OvzError("exec needs a command", "command")
            if args.timeout is not None and args.timeout <= 0:
                raise OvzError("must be above 0 seconds, got %s" % args.timeout, "timeout")
            tty = os.isatty(0) if args.tty is None else args.tty
            env = {"TERM": os.environ.get("TERM", "linux")} if tty else None
            # One argument is a command line for the shell inside (as vzctl exec and ovz_exec's command);
            # several are the command's argv, run as they are (as ovz_exec's argv).
            argv = ["/bin/sh", "-c", args.argv[0]] if len(args.argv) == 1 else args.argv
            result = manager.exec(args.name, argv, capture=False, tty=tty, env=env, timeout=args.timeout)
            if result.timed_out:
                _say("ovzctl: the command did not end within %g s; it was killed with its process group" % args.timeout,
                     sys.stderr)
                return EXIT_EXEC_TIMEOUT
            return result.rc
        elif args.command == "enter":
            env = {"TERM": os.environ.get("TERM", "linux")}
            return manager.exec(args.name, ["/bin/sh", "-l"], capture=False, tty=True, env=env).rc
    except NoSuchContainer as exc:
        _say("ovzctl: %s" % exc.args[0], sys.stderr)
        return EXIT_NOT_FOUND
    except ContainerRunning as exc:
        hint = " (or destroy it with --force)" if args.command == "destroy" else ""
        _say("ovzctl: %s%s" % (exc.args[0], hint), sys.stderr)
        return EXIT_RUNNING
    except OvzError as exc:
        _say("ovzctl: %s" % exc, sys.stderr)
        return 1
    return 0


def _bcd(args: argparse.Namespace) -> int:
    from . import bcd
    try:
        mountpoint, pidfile, logfile = bcd.default_paths(args.data_dir)
    except OvzError as exc:
        _say("ovzctl: %s" % exc, sys.stderr)
        return 1
    mountpoint = os.path.abspath(args.mountpoint or mountpoint)
    pidfile = os.path.abspath(args.pidfile or pidfile)
    logfile = os.path.abspath(args.logfile or logfile)
    try:
        if args.action == "start" and args.foreground:
            return bcd.serve(args.data_dir, mountpoint, pidfile, args.interval)
        if args.action == "start":
            started, pid = bcd.start(args.data_dir, mountpoint, pidfile, logfile, args.interval)
            _say("ovz-bcd %s, pid %d, serving %s" % ("started" if started else "already running", pid, mountpoint))
        elif args.action == "stop":
            was_running, notes = bcd.stop(args.data_dir, mountpoint, pidfile)
            for note in notes:
                _say("ovz-bcd: %s" % note, sys.stderr)
            _say("ovz-bcd %s" % ("stopped" if was_running else "was not running"))
        else:
            state = bcd.status(args.data_dir, mountpoint, pidfile)
            _say(bcd.dumps(state))
            return 0 if state["running"] else 3
    except OSError as exc:
        _say("ovzctl: bcd %s: %s" % (args.action, exc), sys.stderr)
        return 1
    return 0
