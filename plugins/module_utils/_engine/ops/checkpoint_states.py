# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The states ``ovz_checkpoint`` brings a container to: checkpointed, restored, suspended, resumed, migrated.

Each is idempotent the vzctl way: a dump that is already there (and a container in the state
it leaves) is not taken again unless forced, and a running container is not restored over.
``reach`` fills the report it is given as it goes, so that a failure still says where it got.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..base.diff import DifferenceTracker
from ..base.errors import InvalidParameter, StateConflict
from ..base.states import RUNNING_STATES, STOPPED_STATES, State
from ..container.manager import ContainerManager
from . import checkpoint as ckpt
from .migration import migrate
from .remote import Target


@dataclass
class CheckpointRequest:
    """What the caller asks for; the fields are ``ovz_checkpoint``'s parameters of the same names."""

    state: str
    dumpfile: Optional[str] = None
    dump_dir: Optional[str] = None
    leave_running: bool = False
    force: bool = False
    tcp_established: bool = True
    target: Optional[str] = None
    target_data_dir: str = "/var/lib/ovz"
    target_cgroup_parent: str = "auto"
    target_python: str = "python3"
    identity_file: Optional[str] = None
    known_hosts: Optional[str] = None
    ssh_options: List[str] = field(default_factory=list)
    pre_dump_iterations: Optional[int] = None
    keep_source: bool = False
    lazy: Optional[bool] = None

    @classmethod
    def from_mapping(cls, values: Dict[str, Any]) -> "CheckpointRequest":
        """The request from a mapping holding (at least) every field, such as a module's parameters."""
        return cls(**dict((item.name, values[item.name]) for item in fields(cls)))


def dump_location(request: CheckpointRequest) -> Tuple[Optional[str], Optional[str], bool]:
    """(path, ``dumpfile`` or ``dump_dir``, present?) of the dump the request names."""
    for param, path in (("dumpfile", request.dumpfile), ("dump_dir", request.dump_dir)):
        if path is None:
            continue
        if not os.path.isabs(path):
            raise InvalidParameter("must be an absolute path, got %r" % path, param)
        if param == "dumpfile":
            if os.path.isdir(path):
                raise InvalidParameter("%s is a directory; use dump_dir for a directory of images" % path, param)
            return path, param, os.path.isfile(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise InvalidParameter("%s exists and is not a directory" % path, param)
        return path, param, ckpt.is_images_dir(path)
    return None, None, False


def archive_meta(path: str) -> Dict[str, Any]:
    """The checkpoint description inside a dump archive; fails naming dumpfile when there is none."""
    try:
        with tarfile.open(path, mode="r") as archive:
            member = archive.extractfile(ckpt.META_FILE)
            meta = json.loads(member.read().decode()) if member is not None else None
    except KeyError:
        meta = None
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise InvalidParameter("%s is not a readable dump archive: %s" % (path, exc), "dumpfile") from None
    if not isinstance(meta, dict) or meta.get("version") != ckpt.META_VERSION:
        raise InvalidParameter("%s holds no checkpoint of this collection" % path, "dumpfile")
    return meta


class _States:
    """One call: the node, the container, its state before, and the report being filled."""

    def __init__(self, manager: ContainerManager, name: str, request: CheckpointRequest, check_mode: bool,
                 report: Dict[str, Any]) -> None:
        self.manager = manager
        self.name = name
        self.request = request
        self.check_mode = check_mode
        self.report = report
        self.checkpointer = ckpt.Checkpointer(manager)
        self.state = manager.status(name)

    def checkpointed(self) -> None:
        request, name, state = self.request, self.name, self.state
        path, param, present = dump_location(request)
        if path is None:
            raise InvalidParameter("state=checkpointed needs dumpfile or dump_dir", "dumpfile")
        if param == "dumpfile" and not os.path.isdir(os.path.dirname(path)):
            raise InvalidParameter("the directory of %s does not exist" % path, "dumpfile")
        self.report["dump"] = path
        keep = request.leave_running
        if present and not request.force and (state in RUNNING_STATES if keep else state in STOPPED_STATES):
            return
        if state not in RUNNING_STATES:
            raise StateConflict("container %s is %s; only a running container can be checkpointed" % (name, state),
                                "state")
        self.checkpointer.criu.version()   # CRIU is there (fails naming it otherwise), in check mode too
        if self.check_mode:
            self.checkpointer.check(name)  # nothing inside that CRIU would refuse (the dump checks it itself)
            self.report.update(changed=True, state=State.RUNNING if keep else State.STOPPED)
            return
        dump = self.checkpointer.dump if param == "dump_dir" else self.checkpointer.dump_to_file
        self._done(dump(name, path, leave_running=keep, tcp_established=request.tcp_established))

    def restored(self) -> None:
        request, name, state = self.request, self.name, self.state
        path, param, present = dump_location(request)
        if path is None:
            raise InvalidParameter("state=restored needs dumpfile or dump_dir", "dumpfile")
        self.report["dump"] = path
        if state in RUNNING_STATES:
            return
        if not present:
            raise InvalidParameter("no dump at %s" % path, str(param))
        meta = archive_meta(path) if param == "dumpfile" else ckpt.load_meta(path)
        if meta.get("name") != name:
            raise InvalidParameter("%s is a checkpoint of container %s, not of %s" % (path, meta.get("name"), name),
                                   "name")
        own = self.manager.layout.dump(name)
        if state == State.SUSPENDED and (param == "dumpfile" or os.path.realpath(path) != os.path.realpath(own)):
            raise StateConflict("container %s is suspended (its memory is in %s): resume it instead of restoring "
                                "another checkpoint" % (name, own), "name")
        self.checkpointer.criu.version()
        if self.check_mode:
            self.report.update(changed=True, state=State.RUNNING)
            return
        if param == "dump_dir":
            self._done(self.checkpointer.restore(name, path, tcp_established=request.tcp_established))
            return
        scratch = ckpt.scratch_dir(self.manager, name, "restore")
        try:
            began = time.monotonic()
            ckpt.unpack(path, scratch)
            unpack_ms = round((time.monotonic() - began) * 1000.0, 1)
            done = self.checkpointer.restore(name, scratch, tcp_established=request.tcp_established)
            done["timings"]["unpack_ms"] = unpack_ms
        finally:
            ckpt.remove_scratch(scratch)
        self._done(done)

    def suspended(self) -> None:
        name, state = self.name, self.state
        self.report["dump"] = self.manager.layout.dump(name)
        if state == State.SUSPENDED:
            return
        if state not in RUNNING_STATES:
            raise StateConflict("container %s is %s and has no suspended state; only a running container can be "
                                "suspended" % (name, state), "state")
        self.checkpointer.criu.version()
        if self.check_mode:
            self.checkpointer.check(name)
            self.report.update(changed=True, state=State.SUSPENDED)
            return
        self._done(self.checkpointer.suspend(name, tcp_established=self.request.tcp_established))

    def resumed(self) -> None:
        name, state = self.name, self.state
        if state in RUNNING_STATES:
            return
        self.report["dump"] = self.manager.layout.dump(name)
        if state != State.SUSPENDED:
            raise StateConflict("container %s is %s and was not suspended: nothing to resume from %s"
                                % (name, state, self.manager.layout.dump(name)), "state")
        self.checkpointer.criu.version()
        if self.check_mode:
            self.report.update(changed=True, state=State.RUNNING)
            return
        self._done(self.checkpointer.resume(name, tcp_established=self.request.tcp_established))

    def migrated(self) -> None:
        request = self.request
        if not request.target:
            raise InvalidParameter("state=migrated needs a target", "target")
        target = Target.from_param(request.target, data_dir=request.target_data_dir,
                                   cgroup_parent=request.target_cgroup_parent, python=request.target_python,
                                   identity_file=request.identity_file, known_hosts=request.known_hosts,
                                   ssh_options=list(request.ssh_options or []))
        done = migrate(self.manager, self.name, target, pre_dump_iterations=request.pre_dump_iterations,
                       keep_source=request.keep_source, tcp_established=request.tcp_established,
                       check_mode=self.check_mode, lazy=request.lazy)
        self.report["changed"] = bool(done.get("changed"))
        self.report["migration"] = done
        self.report["warnings"] = list(done.get("warnings") or [])
        self.report["timings"] = dict((key if key.endswith("_ms") else key + "_ms",
                                       round(value * 1000.0, 1) if isinstance(value, (int, float)) else value)
                                      for key, value in (done.get("timings") or {}).items())
        if done.get("frozen_time") is not None:
            self.report["frozen_ms"] = round(done["frozen_time"] * 1000.0, 1)

    def _done(self, done: Dict[str, Any]) -> None:
        self.report.update(changed=True, checkpoint=done, timings=done.get("timings", {}))
        for key in ("frozen_ms", "size"):
            if key in done:
                self.report[key] = done[key]


def reach(manager: ContainerManager, name: str, request: CheckpointRequest, check_mode: bool = False,
          report: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Bring container ``name`` to ``request.state``; the report (``report``, filled as it goes).

    The report holds ``changed``, ``state`` (the container's, after), ``dump`` (the path it concerns),
    ``checkpoint`` (the engine's own report: timings, sizes), ``timings``, ``frozen_ms``, ``size``,
    for a migration ``migration`` and ``warnings``, and ``diff`` (state and dump, before and after).
    """
    report = report if report is not None else {}
    report.setdefault("changed", False)
    report.setdefault("state", None)
    states = _States(manager, name, request, check_mode, report)
    before = states.state
    if before == State.ABSENT and request.state != "migrated":
        raise StateConflict("container %s does not exist" % name, "name")
    actions: Dict[str, Callable[[], None]] = {
        "checkpointed": states.checkpointed, "restored": states.restored, "suspended": states.suspended,
        "resumed": states.resumed, "migrated": states.migrated,
    }
    if request.state not in actions:
        raise InvalidParameter("must be one of %s, got %r" % (", ".join(actions), request.state), "state")
    actions[request.state]()
    if not report["state"]:
        report["state"] = manager.status(name)
    diff = DifferenceTracker()
    diff.add("state", before, report["state"])
    diff.add("dump", None, report.get("dump"))
    report["diff"] = diff.diff()
    return report
