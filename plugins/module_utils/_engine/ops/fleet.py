# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Converge many containers of one node in one call (the ``ovz_fleet`` module).

Each container goes through the same plan and apply steps as the single
modules (``converge.plan_container``/``apply_container``, ``converge.plan_network``/
``apply_network``, ``limits.update``, ``quota.update``). Every container is
planned before the first one is touched, so bad input changes nothing; the
node's configurations are read once, and the address conflicts are checked
against the planned state of the whole list. The addresses the run newly gives
are probed for on their segments in one round (duplicate-address detection),
before any change.

The list is declared once for many nodes, so two guards look at all of it, not only at this
node's share. ``check_nodes``: an item whose ``node`` is not a node of the inventory fails the run
on every node before anything changes (a misspelt node would leave its item converged nowhere, and
prune would remove its container from the node that runs it). ``kept_by_prune``: prune keeps a
container that the list moved to another node when that node is not in this run (``--limit``), so
it is never removed here before it exists there.
"""

from __future__ import annotations

import difflib
import functools
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from ..base.errors import InvalidParameter, OvzError
from ..base.states import State
from ..container.manager import ContainerManager
from ..kernel import dad
from ..node.config import ContainerConfig, iter_configs, validate_labels, validate_name
from ..resources import limits as ovz_limits
from ..resources import network
from ..resources.network import NetworkPlan
from ..resources import quota as ovz_quota
from . import converge
from . import limits as limits_op
from . import quota as quota_op

FLEET_LABEL = "ovz_fleet"
FLEET_STATES = ("present", "started", "stopped", "frozen", "absent")
CREATE_FROM_QUOTA = ("diskspace", "diskinodes")


class FleetError(OvzError):
    """A failure of one container, naming it and the parameter (``containers[NAME].limits.ram``)."""

    def __init__(self, name: str, section: str, exc: BaseException) -> None:
        inner = exc.param if isinstance(exc, OvzError) else None
        if section == "" and inner in CREATE_FROM_QUOTA:
            section = "quota"
        path = ".".join(part for part in (section, inner) if part)
        param = "containers[%s]%s" % (name, "." + path if path else "")
        if isinstance(exc, OvzError):
            message = exc.args[0] if exc.args else str(exc)
        else:
            message = "%s: %s" % (type(exc).__name__, exc)
        super().__init__(message, param)
        self.name = name
        self.cause = None if isinstance(exc, OvzError) else exc


def select(items: Sequence[Mapping[str, Any]], node: Optional[str]) -> List[Tuple[int, Mapping[str, Any]]]:
    """The items this node converges, with their index in the list."""
    return [(index, item) for index, item in enumerate(items)
            if node is None or item.get("node") in (None, node)]


def _item_label(index: int, item: Mapping[str, Any]) -> str:
    name = item.get("name")
    return str(name) if isinstance(name, str) and name else str(index)


def check_nodes(items: Sequence[Mapping[str, Any]], nodes: Optional[Collection[str]], node: Optional[str] = None) -> None:
    """Every ``node`` the items name is one of ``nodes`` (the inventory's hosts), and so is this ``node``.

    Checked on the whole list, the same on every node, so a bad item fails every node's run
    before any of them changes anything. ``nodes`` None: nothing to check against.
    """
    if nodes is None:
        return
    known = set(nodes)
    if node is not None and node not in known:
        raise InvalidParameter("this node %r is not an inventory host%s" % (node, _did_you_mean(node, known)), "node")
    for index, item in enumerate(items):
        named = item.get("node")
        if named is not None and named not in known:
            label = _item_label(index, item)
            raise InvalidParameter("item %s names node %r, which is not an inventory host%s; nothing was changed"
                                   % (label, named, _did_you_mean(str(named), known)), "containers[%s].node" % label)


def _did_you_mean(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=3)
    return " (did you mean %s?)" % " or ".join(close) if close else ""


def kept_by_prune(items: Sequence[Mapping[str, Any]], node: Optional[str],
                  play_nodes: Optional[Collection[str]]) -> Dict[str, str]:
    """The containers prune must leave on ``node``: declared for another node that is not among
    ``play_nodes`` (the nodes of this run), which therefore does not create them now. By name, that node."""
    if node is None or play_nodes is None:
        return {}
    playing = set(play_nodes)
    return dict((str(item.get("name")), str(item.get("node"))) for item in items
                if item.get("node") not in (None, node) and item.get("node") not in playing)


def _given(section: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    return dict((key, value) for key, value in (section or {}).items() if value is not None)


def _differs(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str) -> List[str]:
    return ["%s.%s" % (prefix, key) for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


@dataclass
class ContainerWork:
    """The plan for one container, and what happened to it."""

    name: str
    item: Mapping[str, Any]
    params: Dict[str, Any]
    plan: Optional[converge.ContainerPlan] = None
    network: Optional[Dict[str, Any]] = None          # the network options given
    network_change: Optional[Tuple[Dict[str, Any], Dict[str, Any]]] = None
    network_plan: Optional[NetworkPlan] = None   # (the field ``network`` hides the module here)
    limits: Dict[str, Any] = field(default_factory=dict)
    limits_change: Optional[Tuple[Dict[str, Any], Dict[str, Any]]] = None
    quota: Optional[ovz_quota.QuotaRequest] = None
    quota_change: Optional[Tuple[Dict[str, Any], Dict[str, Any]]] = None
    changes: List[str] = field(default_factory=list)
    not_enforced: Dict[str, str] = field(default_factory=dict)
    remove: bool = False
    done: bool = False
    state: Optional[State] = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def planned(self) -> converge.ContainerPlan:
        """The plan, which every item has once planning is done."""
        if self.plan is None:
            raise ValueError("container %s has no plan yet" % self.name)
        return self.plan


class FleetConverger:
    """Plans and applies a fleet on one node (``manager``)."""

    def __init__(self, manager: ContainerManager, fleet: Optional[str] = None,
                 warn: Callable[[str], None] = lambda text: None) -> None:
        self.manager = manager
        self.fleet = fleet
        self.warn = warn
        self.work: List[ContainerWork] = []
        self._host: Optional[ovz_limits.HostInfo] = None
        self.networks: Dict[str, Dict[str, Any]] = {}   # every container's network after the run
        self._view: Optional[network.HostView] = None
        self.prune_kept: Dict[str, str] = {}            # what prune left, by name: the node it is declared for

    @property
    def view(self) -> network.HostView:
        """The node's links, addresses and routes, read once for the whole plan."""
        if self._view is None:
            self._view = network.host_view()
        return self._view

    @property
    def host(self) -> ovz_limits.HostInfo:
        if self._host is None:
            self._host = ovz_limits.HostInfo.probe(self.manager.backend)
        return self._host

    # -- plan -------------------------------------------------------------------------------
    def plan(self, items: Sequence[Tuple[int, Mapping[str, Any]]], prune: bool = False,
             keep: Optional[Mapping[str, str]] = None) -> None:
        """Validate every item against the node and describe the changes; touches nothing.

        ``keep`` (``kept_by_prune``): containers prune leaves alone, by name, with the node the list
        declares them for."""
        if prune and self.fleet is None:
            raise InvalidParameter("prune removes the containers of one fleet: name it with fleet", "fleet")
        if self.fleet is not None:
            try:
                validate_labels({FLEET_LABEL: self.fleet})
            except OvzError as exc:
                raise InvalidParameter(exc.args[0], "fleet") from None
        configs: Dict[str, ContainerConfig] = dict((c.name, c) for c in iter_configs(self.manager.layout))
        networks = self.networks
        networks.update((name, c.network) for name, c in configs.items())
        held = {str(ip) for conf in networks.values() for ip in network.new_addresses(None, conf)}
        if prune and self.fleet is not None:
            # Removed first, so that their addresses are free for the others.
            listed = set(str(item.get("name")) for _index, item in items)
            for name in sorted(configs):
                if name not in listed and configs[name].labels.get(FLEET_LABEL) == self.fleet:
                    if keep and name in keep:
                        self.prune_kept[name] = keep[name]
                        self.warn("prune keeps %s: the list declares it for node %s, which is not in this run; "
                                  "it is removed here in a run that includes %s" % (name, keep[name], keep[name]))
                        continue
                    self.work.append(ContainerWork(name, {}, {}, remove=True, changes=["removed"], state=State.ABSENT))
                    networks.pop(name, None)
        seen: Dict[str, int] = {}
        for index, item in items:
            try:
                name = validate_name(item.get("name"))
            except OvzError as exc:
                raise InvalidParameter(exc.args[0], "containers[%d].name" % index) from None
            if name in seen:
                raise InvalidParameter("%s is also item %d of the list" % (name, seen[name]),
                                       "containers[%d].name" % index)
            seen[name] = index
            try:
                params = self._container_params(item, configs.get(name))
            except Exception as exc:
                raise FleetError(name, "", exc) from exc
            work = ContainerWork(name, item, params)
            self._plan_one(work, networks)
            self.work.append(work)
        self._probe_new_addresses(held)

    def _probe_new_addresses(self, held: Set[str]) -> None:
        """One duplicate-address probe round for every address this run newly gives, but those a container of
        this node holds now (the node knows them itself, and a removed one may still answer for its address)."""
        targets: List[Tuple[network.IPAddress, str]] = []
        owners: Dict[Tuple[str, str], str] = {}
        timeout = 0.0
        for work in self.work:
            plan = work.network_plan
            seconds = dad.validate_timeout((work.network or {}).get("dad_timeout"))
            if plan is None or work.remove or seconds <= 0:
                continue
            fresh = [ip for ip in network.new_addresses(plan.before, plan.after) if str(ip) not in held]
            for ip, ifname in network.dad_targets(plan.after, fresh):
                targets.append((ip, ifname))
                owners[(str(ip), ifname)] = work.name
            timeout = max(timeout, seconds)
        holders = network.find_holders(targets, timeout)
        if holders:
            name = owners[(holders[0].address, holders[0].ifname)]
            mine = [h for h in holders if owners[(h.address, h.ifname)] == name]
            raise FleetError(name, "network", network.duplicates_error(mine))

    def _container_params(self, item: Mapping[str, Any], config: Optional[ContainerConfig]) -> Dict[str, Any]:
        keys = ("state", "template", "hostname", "onboot", "bootorder", "labels", "init", "layout", "unprivileged",
                "seccomp_allow", "wait_boot", "timeout")
        params = dict((key, item.get(key)) for key in keys)
        params["state"] = params["state"] or "started"
        quota = item.get("quota") or {}
        for key in CREATE_FROM_QUOTA:
            params[key] = quota.get(key)
        labels = params["labels"]
        if labels is not None:
            labels = validate_labels(labels)
        if self.fleet is not None:
            base = labels if labels is not None else (dict(config.labels) if config is not None else {})
            labels = dict(base, **{FLEET_LABEL: self.fleet})
        params["labels"] = labels
        if params["timeout"] is not None and params["timeout"] < 0:
            raise InvalidParameter("must not be negative, got %d" % params["timeout"], "timeout")
        return params

    def _plan_one(self, work: ContainerWork, networks: Dict[str, Dict[str, Any]]) -> None:
        name, item = work.name, work.item
        section = ""
        try:
            plan = work.plan = converge.plan_container(self.manager, name, work.params)
            for warning in plan.warnings:
                self.warn("%s: %s" % (name, warning))
            work.changes = (["created"] if plan.create_config is not None else []) + \
                [key for key in plan.tracker.changes if key not in ("layout", "unprivileged") or plan.create_config is None]
            work.state = plan.wanted
            if plan.wanted == State.ABSENT:
                if plan.current != State.ABSENT:
                    work.changes = ["removed"]
                networks.pop(name, None)
                return
            new = plan.create_config is not None
            section = "network"
            if item.get("network") is not None:
                work.network = dict(item["network"], state="present")
                dad.validate_timeout(work.network.get("dad_timeout"))
                others = [(other, conf) for other, conf in networks.items() if other != name]
                if new:
                    planned = converge.plan_new_network(self.manager, name, work.network, others, self.view)
                else:
                    planned = converge.plan_network(self.manager, name, work.network, others, self.view,
                                                    probe=False).planned   # probed for all items at once
                networks[name] = planned.after
                if planned.changed:
                    work.network_change = (planned.before, planned.after)
                    work.network_plan = planned
                    work.changes += _differs(planned.before, planned.after, "network") or ["network.live"]
            section = "limits"
            work.limits = _given(item.get("limits"))
            if work.limits:
                if new:
                    request = ovz_limits.normalize_request(work.limits)
                    after = ovz_limits.merge({}, request)
                    ovz_limits.validate_combination(after, self.host)
                    before = {}
                    drift: List[str] = []
                else:
                    change = limits_op.update(self.manager, name, work.limits, dry_run=True)
                    before, after, drift = change.before, change.after, change.drift
                    work.not_enforced.update(change.not_enforced)
                if before != after or drift:
                    work.limits_change = (ovz_limits.effective(before), ovz_limits.effective(after))
                    work.changes += _differs(*work.limits_change, prefix="limits")
                    if before == after:      # the stored limits hold, the kernel does not
                        work.changes.append("limits.kernel_differs")
            section = "quota"
            quota = _given(item.get("quota"))
            if quota:
                work.quota = converge.quota_request(quota)
                if not new:
                    qchange = quota_op.update(self.manager, name, work.quota, dry_run=True)
                    work.not_enforced.update(qchange.not_enforced)
                    if qchange.changed:
                        work.quota_change = (qchange.before, qchange.after)
                        work.changes += _differs(qchange.before, qchange.after, "quota") or ["quota.actions"]
                elif set(quota) - set(CREATE_FROM_QUOTA) - {"restart"}:
                    work.changes += ["quota.%s" % key for key in sorted(quota) if key not in CREATE_FROM_QUOTA]
        except FleetError:
            raise
        except Exception as exc:
            raise FleetError(name, section, exc) from exc
        work.changes = list(dict.fromkeys(work.changes))

    # -- apply ------------------------------------------------------------------------------
    def apply(self) -> None:
        """Make the planned changes, container after container."""
        for work in self.work:
            if not work.changed:
                continue
            if work.remove:
                try:
                    self.manager.destroy(work.name)
                except Exception as exc:
                    raise FleetError(work.name, "", exc) from exc
                work.done = True
                continue
            section = {"value": ""}
            try:
                converge.apply_container(self.manager, work.planned, work.params,
                                         before_run_state=functools.partial(self._settle, work, section))
                section["value"] = ""
                work.state = self.manager.status(work.name)
            except Exception as exc:
                raise FleetError(work.name, section["value"], exc) from exc
            work.done = True

    def _settle(self, work: ContainerWork, section: Dict[str, str]) -> None:
        """Network, limits and quota of an existing (or just created) container, before its run state changes."""
        name = work.name
        if work.network_change is not None:
            section["value"] = "network"
            with self.manager.lock(name):
                # The plan made and checked against the node before the first change of this run.
                converge.apply_network(self.manager, converge.network_step(self.manager, name, work.network_plan),
                                       self.warn)
        if work.limits_change is not None:
            section["value"] = "limits"
            applied_limits = limits_op.update(self.manager, name, work.limits, warn=self.warn)
            work.not_enforced.update(applied_limits.not_enforced)
        if work.quota is not None and (work.quota_change is not None or work.planned.create_config is not None):
            section["value"] = "quota"
            applied_quota = quota_op.update(self.manager, name, work.quota)
            work.not_enforced.update(applied_quota.not_enforced)
        section["value"] = ""

    # -- report -----------------------------------------------------------------------------
    def report(self, check_mode: bool) -> Dict[str, Any]:
        containers: Dict[str, Any] = {}
        summary = dict(created=0, changed=0, unchanged=0, removed=0)
        for work in self.work:
            if not check_mode and work.changed and not work.done:
                continue   # not reached (a failure came first)
            containers[work.name] = dict(changed=work.changed, changes=list(work.changes), state=work.state)
            if "created" in work.changes:
                summary["created"] += 1
            elif "removed" in work.changes:
                summary["removed"] += 1
            elif work.changed:
                summary["changed"] += 1
            else:
                summary["unchanged"] += 1
        not_enforced = dict((w.name, dict(w.not_enforced)) for w in self.work if w.not_enforced)
        pruned = [w.name for w in self.work if w.remove and (check_mode or w.done)]
        return dict(changed=any(w.changed for w in self.work), containers=containers, summary=summary,
                    not_enforced=not_enforced, pruned=pruned, prune_kept=dict(self.prune_kept))

    def diff(self) -> Dict[str, Any]:
        before: Dict[str, Any] = {}
        after: Dict[str, Any] = {}
        for work in self.work:
            if not work.changed:
                continue
            if work.remove:
                before[work.name], after[work.name] = {"state": "present"}, {"state": "absent"}
                continue
            old = dict(work.planned.tracker.before)
            new = dict(work.planned.tracker.after)
            for key, change in (("network", work.network_change), ("limits", work.limits_change),
                                ("quota", work.quota_change)):
                if change is not None:
                    old[key], new[key] = change
            before[work.name], after[work.name] = old, new
        return dict(before=before, after=after)


def converge_fleet(manager: ContainerManager, containers: Sequence[Mapping[str, Any]], node: Optional[str] = None,
                   nodes: Optional[Collection[str]] = None, play_nodes: Optional[Collection[str]] = None,
                   fleet: Optional[str] = None, prune: bool = False, check_mode: bool = False,
                   warn: Optional[Callable[[str], None]] = None,
                   report: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Bring this node's share of ``containers`` (``ovz_fleet``'s items) to what they say; the report.

    ``report`` is filled as the work goes: after a failure it still holds what each container reached
    (and, for a container's failure, the traceback of its cause as ``exception``). ``diff`` holds the
    planned changes, ``timings`` the seconds of ``plan`` and ``apply``.
    """
    report = report if report is not None else {}
    report.update(changed=False, containers={}, summary={}, not_enforced={}, pruned=[], prune_kept={}, timings={})
    check_nodes(containers, nodes, node)
    converger = FleetConverger(manager, fleet=fleet, warn=warn or (lambda text: None))
    try:
        start = time.monotonic()
        converger.plan(select(containers, node), prune=prune, keep=kept_by_prune(containers, node, play_nodes))
        report["timings"]["plan"] = round(time.monotonic() - start, 3)
        if not check_mode:
            start = time.monotonic()
            converger.apply()
            report["timings"]["apply"] = round(time.monotonic() - start, 3)
        report.update(converger.report(check_mode=check_mode))
        report["diff"] = converger.diff()
    except Exception as exc:
        report.update(converger.report(check_mode=check_mode))
        if isinstance(exc, FleetError) and exc.cause is not None:
            report["exception"] = "".join(traceback.format_exception(type(exc.cause), exc.cause,
                                                                     exc.cause.__traceback__))
        raise
    return report
