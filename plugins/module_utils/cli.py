# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``ovzctl``: the engine from a shell, in vzctl's vocabulary.

    ovzctl [--data-dir D] [--cgroup-parent P] COMMAND NAME [...]

    create NAME --ostemplate T [--layout image|directory] [--hostname H] [--diskspace S]
    start NAME [--wait]        stop NAME [--timeout S]      restart NAME
    suspend NAME / resume NAME (freeze / thaw)              destroy NAME
    status NAME                list                         exec NAME CMD [ARG...]
    enter NAME                 (an interactive shell inside)

Exit status: 0 on success, 1 on failure with the message on stderr, and for
``exec`` the command's own status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .container import ContainerManager
from .errors import OvzError
from .sizes import parse_pair


def _say(text: str, stream=None) -> None:
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
    start = commands.add_parser("start")
    start.add_argument("name")
    start.add_argument("--wait", action="store_true", help="wait until the startup scripts have run")
    stop = commands.add_parser("stop")
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float)
    for simple in ("restart", "suspend", "resume", "destroy", "status", "enter"):
        commands.add_parser(simple).add_argument("name")
    commands.add_parser("list")
    execute = commands.add_parser("exec")
    execute.add_argument("name")
    execute.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    manager = ContainerManager(args.data_dir, args.cgroup_parent)
    try:
        if args.command == "create":
            manager.create(args.name, args.ostemplate, layout=args.layout, hostname=args.hostname,
                           diskspace=parse_pair(args.diskspace, "diskspace") if args.diskspace else None)
        elif args.command == "start":
            if not manager.start(args.name, wait_boot=args.wait):
                _say("Container %s is already running" % args.name, sys.stderr)
        elif args.command == "stop":
            if not manager.stop(args.name, timeout=args.timeout):
                _say("Container %s was not running" % args.name, sys.stderr)
        elif args.command == "restart":
            manager.restart(args.name)
        elif args.command == "suspend":
            manager.freeze(args.name)
        elif args.command == "resume":
            manager.thaw(args.name)
        elif args.command == "destroy":
            manager.destroy(args.name)
        elif args.command == "status":
            _say(json.dumps(manager.facts(args.name), indent=2, sort_keys=True))
        elif args.command == "list":
            for facts in manager.list():
                _say("%-20s %-8s %-8s %s" % (facts["name"], facts["state"], facts.get("init_pid") or "-",
                                             facts.get("hostname", "")))
        elif args.command == "exec":
            if not args.argv:
                raise OvzError("exec needs a command", "command")
            return manager.exec(args.name, args.argv, capture=False).rc
        elif args.command == "enter":
            env = {"TERM": os.environ.get("TERM", "linux")}
            return manager.exec(args.name, ["/bin/sh", "-l"], capture=False, env=env).rc
    except OvzError as exc:
        _say("ovzctl: %s" % exc, sys.stderr)
        return 1
    return 0
