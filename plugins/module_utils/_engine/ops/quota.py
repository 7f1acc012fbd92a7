# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The ``ovz_quota`` operation: lock, load, plan, apply (live where the layout allows), persist.

The mechanism, quotactl, project IDs, the ext4 image and its resize, the second
level, is ``resources/quota.py``. Here one container's request is planned against
its stored settings and its storage, every check before the first change, and the
plan is carried out under its lock, with the container stopped around the steps
that need it unmounted (``restart: true``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..base.errors import InvalidParameter, KernelUnsupported, StateConflict
from ..base.states import RUNNING_STATES
from ..container.manager import ContainerManager
from ..kernel.storage import MIN_DISKSPACE, Storage
from ..node.config import ContainerConfig
from ..resources.quota import (CAP_SYS_RESOURCE, FS_XFLAG_PROJINHERIT, PRJQUOTA, QUOTA_BLOCK, QuotaRequest,
                               apply_second_level, assign_project, directory_quota_missing, du, ext4_info, get_grace,
                               get_project, get_quota, grow_image_online, has_capability, inodes_after_resize, kib,
                               min_image_bytes, project_id_for, require_kernel_quota, resize_image_offline,
                               second_level, second_level_drift, set_grace, set_image_quota_feature, set_quota,
                               settings)


@dataclass
class QuotaChange:
    before: Dict[str, Any]
    after: Dict[str, Any]
    running: bool
    drift: List[str] = field(default_factory=list)
    applied: bool = False
    restarted: bool = False
    not_enforced: Dict[str, str] = field(default_factory=dict)
    actions: List[str] = field(default_factory=list)
    projid: Optional[int] = None

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.drift) or bool(self.actions)


def _merge(before: Dict[str, Any], request: QuotaRequest) -> Dict[str, Any]:
    after = {key: (dict(value) if isinstance(value, dict) else value) for key, value in before.items()}
    for key in ("diskspace", "diskinodes", "quotatime", "quotaugidlimit"):
        value = getattr(request, key)
        if value is not None:
            after[key] = value
    for key in ("users", "groups"):
        entries = getattr(request, key)
        if entries:
            merged = dict(after[key])
            merged.update(entries)
            after[key] = merged
    return after


def not_enforced(config: ContainerConfig, storage: Storage, wanted: Mapping[str, Any]) -> Dict[str, str]:
    """Settings stored but without a kernel mechanism for this container (never pretended)."""
    result: Dict[str, str] = {}
    if config.layout == "image":
        space, inodes = wanted["diskspace"], wanted["diskinodes"]
        if space[0] is not None and space[0] != space[1]:
            result["diskspace"] = ("soft limit: the image layout enforces only the hard limit (the filesystem's size); "
                                   "the soft value is stored and reported")
        if inodes[0] is not None and inodes[0] != inodes[1]:
            result["diskinodes"] = ("soft limit: the image layout enforces only the inode count of its filesystem; "
                                    "the soft value is stored and reported")
        if wanted.get("quotatime") is not None and not wanted.get("quotaugidlimit"):
            result["quotatime"] = "the image layout has no first-level soft limit, so no grace; it applies to the second level"
    if config.layout == "directory" and any(v is not None for v in list(wanted["diskspace"]) + list(wanted["diskinodes"])):
        missing = directory_quota_missing(storage)
        if missing is not None:
            result["diskspace"] = result["diskinodes"] = "stored, not enforced: %s" % missing
    if wanted.get("quotaugidlimit"):
        result["quotaugidlimit"] = ("the number of IDs is stored; the kernel does not limit how many users and groups "
                                    "carry a quota, only their limits are enforced")
    return result


def update(manager: ContainerManager, name: str, request: QuotaRequest, dry_run: bool = False) -> QuotaChange:
    """Validate, diff against the stored and live quota, apply (live where the layout allows), persist.

    Every check runs before the first change: a call that fails leaves the
    configuration, the image and the mounts as they were.
    """
    with manager.lock(name):
        config = manager.load(name)
        running = manager.status(name) in RUNNING_STATES
        storage = manager.storage(config)
        before = settings(config)
        if config.layout == "image" and before["diskspace"][1] is None and storage.exists():
            size = storage.image_size()
            before["diskspace"] = [size, size]          # made with the default size
        after = _merge(before, request)
        change = QuotaChange(before=before, after=after, running=running)
        change.not_enforced = not_enforced(config, storage, after)
        if config.layout == "image":
            plan = _plan_image(config, storage, running, request, change)
        else:
            plan = _plan_directory(config, storage, change)
        if dry_run or not change.changed:
            return change
        stop = running and any(kind == "offline" for kind, _step in plan)
        with manager.while_stopped(config, stop):
            for _kind, step in plan:
                step()
            config.diskspace = list(after["diskspace"])
            config.diskinodes = list(after["diskinodes"])
            quota = dict(config.quota or {})
            for key in ("quotatime", "quotaugidlimit", "users", "groups"):
                quota[key] = after[key]
            if change.projid is not None:
                quota["projid"] = change.projid
            config.quota = quota
            manager.store.save(config)
        change.restarted = stop
        change.applied = running
        if running and not stop and second_level(config):
            apply_second_level(config, storage)
        return change


def _plan_image(config: ContainerConfig, storage: Storage, running: bool, request: QuotaRequest,
                change: QuotaChange) -> List[Tuple[str, Any]]:
    """The steps that bring the image to ``change.after``; raises before any step if one cannot be done."""
    before, after = change.before, change.after
    size = storage.image_size() or 0
    info = ext4_info(storage.image)
    space = after["diskspace"]
    if space[1] is None:
        raise InvalidParameter("the image layout needs a size: its filesystem is the limit", "diskspace")
    new_size = int(space[1])
    if new_size < MIN_DISKSPACE:
        raise InvalidParameter("an image needs at least 16M, got %d bytes" % new_size, "diskspace")
    if new_size % 4096:
        raise InvalidParameter("must be a multiple of 4K (the filesystem's block size), got %d bytes" % new_size,
                               "diskspace")
    want_second = bool(after["quotaugidlimit"])
    has_second = bool(info.get("quota"))
    if after["users"] or after["groups"]:
        if not want_second:
            raise InvalidParameter("per-user and per-group quotas need the second level: set quotaugidlimit",
                                   "users" if after["users"] else "groups")
    if want_second:
        require_kernel_quota("ext4", "quotaugidlimit", "the second-level quota (quotaugidlimit)")
    shrink = new_size < size
    offline = shrink or want_second != has_second
    if shrink:
        if running:
            stats = os.statvfs(storage.root)
            floor = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        else:
            floor = min_image_bytes(storage.image)
        if new_size < floor:
            raise InvalidParameter("%d bytes is below what the container uses now (%d bytes); nothing changed"
                                   % (new_size, floor), "diskspace")
        if running and not request.restart:
            raise StateConflict("shrinking the filesystem of running container %s needs it stopped: stop it, or set "
                                "restart: true to stop, shrink and start it; nothing changed" % config.name, "diskspace")
    if want_second != has_second and running and not request.restart:
        raise StateConflict("turning the second-level quota %s changes the filesystem of running container %s, which "
                            "needs it stopped: stop it, or set restart: true; nothing changed"
                            % ("on" if want_second else "off", config.name), "quotaugidlimit")
    inodes = after["diskinodes"]
    have = info["inodes"]
    if running:
        have = os.statvfs(storage.root).f_files
    if new_size != size:
        have = inodes_after_resize(info, new_size)
    if inodes[1] is not None and inodes != before["diskinodes"] and inodes[1] > have:
        raise InvalidParameter(
            "the image's inode count is fixed when it is made (mkfs -N) and grows only with diskspace: it has %d "
            "inodes%s, fewer than %d; nothing changed"
            % (have, " at the new size" if new_size != size else "", inodes[1]), "diskinodes")
    if inodes[1] is not None and inodes[1] < have - info["inodes_per_group"]:
        change.not_enforced["diskinodes"] = (
            "the image's filesystem has %d inodes (set when it was made, grown with diskspace); a lower inode limit "
            "has no mechanism in the image layout" % have)
    grow_live = running and not offline and new_size > size
    if grow_live and not has_capability(CAP_SYS_RESOURCE):
        if not request.restart:
            raise StateConflict(
                "growing the mounted filesystem of running container %s online needs the capability CAP_SYS_RESOURCE "
                "(the kernel's ext4 online resize checks it), which this process does not hold even as root; set "
                "restart: true to stop, grow and start it (or stop the container first); nothing changed"
                % config.name, "diskspace")
        offline = True
    kind = "offline" if offline and running else ("live" if running else "stopped")
    plan: List[Tuple[str, Any]] = []
    if want_second != has_second:
        plan.append((kind, lambda: set_image_quota_feature(storage, want_second)))
        change.actions.append("quota feature %s" % ("on" if want_second else "off"))
    if new_size != size:
        if kind == "live":
            plan.append((kind, lambda: grow_image_online(storage, new_size)))
        else:
            plan.append((kind, lambda: resize_image_offline(storage, new_size)))
        change.actions.append("%s image from %d to %d bytes%s"
                              % ("shrink" if shrink else "grow", size, new_size, " online" if kind == "live" else ""))
    if running and want_second and has_second:
        change.drift = second_level_drift(config, storage, after)
    return plan


def _plan_directory(config: ContainerConfig, storage: Storage, change: QuotaChange) -> List[Tuple[str, Any]]:
    """Project quota steps for the directory layout; raises before any step if one cannot be done."""
    before, after = change.before, change.after
    if after["quotaugidlimit"] or after["users"] or after["groups"]:
        param = "quotaugidlimit" if after["quotaugidlimit"] else ("users" if after["users"] else "groups")
        raise InvalidParameter("the second-level quota needs the image layout: on the directory layout users and "
                               "groups share the host filesystem's quota", param)
    if before == after and not (config.quota or {}).get("projid"):
        return []           # nothing asked and no project quota yet: only usage is reported
    param = "diskspace" if after["diskspace"] != before["diskspace"] else (
        "diskinodes" if after["diskinodes"] != before["diskinodes"] else "quotatime")
    missing = directory_quota_missing(storage)
    if missing is not None:
        raise KernelUnsupported("the directory layout's quota is a project quota (XFS or ext4), and %s; nothing "
                                "changed" % missing, param)
    projid = int((config.quota or {}).get("projid") or project_id_for(storage.private))
    space, inodes = after["diskspace"], after["diskinodes"]
    try:
        owner, xflags = get_project(storage.private)
    except OSError:
        owner, xflags = 0, 0
    current = get_quota(storage.private, PRJQUOTA, projid)
    used_bytes, used_inodes = current["bytes_used"], current["inodes_used"]
    if owner != projid:
        used_bytes, used_inodes = du(storage.private)       # not yet accounted to the project
    for key, pair, used in (("diskspace", space, used_bytes), ("diskinodes", inodes, used_inodes)):
        if pair[1] is not None and pair[1] < used:
            raise InvalidParameter("hard limit %d is below what the container uses now (%d); nothing changed"
                                   % (pair[1], used), key)
    wanted_blocks = [None if v is None else kib(v) * QUOTA_BLOCK for v in space]
    if [current["bytes_soft"], current["bytes_hard"]] != wanted_blocks or \
            [current["inodes_soft"], current["inodes_hard"]] != list(inodes):
        change.drift.append("project quota %d" % projid)
    if owner != projid or not xflags & FS_XFLAG_PROJINHERIT:
        change.actions.append("project %d on %s" % (projid, storage.private))
    grace = after["quotatime"]
    if grace is not None and get_grace(storage.private, PRJQUOTA) != grace:
        change.drift.append("grace time")
    change.projid = projid

    def apply() -> None:
        if owner != projid or not xflags & FS_XFLAG_PROJINHERIT:
            assign_project(storage.private, projid)
        if grace is not None:       # first: a soft limit crossed by the new limits starts its timer with it
            set_grace(storage.private, PRJQUOTA, grace)
        set_quota(storage.private, PRJQUOTA, projid, (space[0], space[1]), (inodes[0], inodes[1]))
    return [("live", apply)]
