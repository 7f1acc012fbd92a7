# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Plan and apply steps that several modules share.

``ovz_container`` and ``ovz_network`` converge one container with these
functions; ``ovz_fleet`` converges many in one run with the same ones, so a
container declared in a fleet ends up exactly as the single modules would
leave it. Parameters come as plain dicts (the modules' ``params``); nothing
here imports Ansible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from ..base.diff import DifferenceTracker
from ..base.errors import OvzError, StateConflict
from ..base.states import RUNNING_STATES, STOPPED_STATES, State
from ..base.sizes import parse_pair
from ..container.manager import ContainerManager, validate_hostname
from ..kernel import dad, lsm, seccomp_filter
from ..node.config import ContainerConfig, iter_configs
from ..node.templates import resolve_template
from ..resources import network
from ..resources.quota import QuotaRequest
from . import lifecycle

CONTAINER_SETTINGS = ("hostname", "onboot", "bootorder", "init", "labels", "seccomp_allow")
NETWORK_SETTINGS = ("ip_address", "netif_mode", "bridge", "ifname", "host_ifname", "mac", "mtu", "routes",
                    "nameserver", "searchdomain", "mac_filter")


def privileged_warning(name: str, lsms: List[str]) -> str:
    """What creating a privileged container says while no LSM profile confines it (``lsms``: the host's)."""
    why = ("this host's kernel enforces no AppArmor or SELinux" if not lsms else
           "the host enforces %s, but this collection loads no profile for containers yet" % ", ".join(lsms))
    return ("unprivileged: container %s is privileged, and %s: its root is host root, held only by the capability "
            "bounding set, its cgroups and the seccomp filter, and can escape (a fresh proc mount, a host block device; "
            "README, Security). Prefer unprivileged: true" % (name, why))


# -- ovz_container ----------------------------------------------------------------------------
def desired_run_state(wanted: str, current: State) -> State:
    """The run state after the call, or raise for a transition that cannot be made."""
    if wanted == "absent":
        return State.ABSENT
    if wanted in ("started", "restarted"):
        return State.RUNNING
    if wanted == "stopped":
        # Not running either: a suspended container keeps its memory (started, it resumes).
        return State.SUSPENDED if current == State.SUSPENDED else State.STOPPED
    if wanted == "frozen":
        if current not in RUNNING_STATES:
            raise StateConflict("only a running container can be frozen; %s is %s"
                                % ("it" if current == State.ABSENT else "the container", current), "state")
        return State.FROZEN
    return State.STOPPED if current == State.ABSENT else current  # present


@dataclass
class ContainerPlan:
    """What converging one container's lifecycle and settings would do."""

    name: str
    current: State
    wanted: State
    tracker: DifferenceTracker
    settings: Dict[str, Any] = field(default_factory=dict)
    create_config: Optional[ContainerConfig] = None
    restart: bool = False
    unprivileged: Optional[bool] = None  # a change of an existing, stopped container
    warnings: List[str] = field(default_factory=list)   # what was given and does not apply

    @property
    def changed(self) -> bool:
        return self.tracker.changed or self.restart


def plan_container(manager: ContainerManager, name: str, params: Mapping[str, Any]) -> ContainerPlan:
    """Validate everything and describe the changes; touches nothing.

    ``params`` has the keys of ``ovz_container``: state, template, hostname, onboot, bootorder,
    labels, init, layout, diskspace, diskinodes, unprivileged (None: not given).
    """
    current = manager.status(name)
    wanted = desired_run_state(params["state"], current)
    plan = ContainerPlan(name, current, wanted, DifferenceTracker(), restart=params["state"] == "restarted")
    tracker = plan.tracker
    tracker.add("state", current, wanted)
    if params.get("hostname") is not None:
        validate_hostname(params["hostname"])
    if params.get("seccomp_allow") is not None:
        params = dict(params, seccomp_allow=seccomp_filter.validate_allowed(params["seccomp_allow"]))
    if current == State.ABSENT and wanted != State.ABSENT:
        create_config = manager.plan_create(
            name, params.get("template"), layout=params.get("layout") or "image", hostname=params.get("hostname"),
            init=params.get("init") or "/sbin/init", onboot=bool(params.get("onboot")),
            diskspace=parse_pair(params["diskspace"], "diskspace") if params.get("diskspace") else None,
            diskinodes=parse_pair(params["diskinodes"], "diskinodes", as_size=False) if params.get("diskinodes") else None,
            unprivileged=params.get("unprivileged") is not False)
        if params.get("bootorder") is not None:
            create_config.bootorder = params["bootorder"]
        if params.get("labels") is not None:
            create_config.labels = params["labels"]
        if params.get("seccomp_allow") is not None:
            create_config.seccomp_allow = params["seccomp_allow"]
        for key in CONTAINER_SETTINGS:
            tracker.add(key, None, getattr(create_config, key))
        tracker.add("layout", None, create_config.layout)
        tracker.add("unprivileged", None, create_config.unprivileged)
        plan.create_config = create_config
        if not create_config.unprivileged:
            plan.warnings.append(privileged_warning(name, lsm.confining()))
    elif current != State.ABSENT:
        config = manager.load(name)
        if params.get("layout") is not None and params["layout"] != config.layout:
            raise StateConflict("the layout of an existing container cannot be changed (it is %s)"
                                % config.layout, "layout")
        for key in CONTAINER_SETTINGS:
            value = params.get(key)
            if value is None or wanted == State.ABSENT:
                tracker.add(key, getattr(config, key), getattr(config, key) if wanted != State.ABSENT else None)
                continue
            tracker.add(key, getattr(config, key), value)
            if getattr(config, key) != value:
                plan.settings[key] = value
        _plan_unprivileged(plan, config, params.get("unprivileged"))
        if wanted != State.ABSENT:
            plan.warnings += _creation_only(manager, config, params)
    return plan


def _creation_only(manager: ContainerManager, config: ContainerConfig, params: Mapping[str, Any]) -> List[str]:
    """Warnings for what only a create uses, given for an existing container with another value."""
    notes = []
    template = params.get("template")
    if template:
        try:
            source = resolve_template(template, manager.layout.templates())
        except OvzError:
            source = template
        if source != config.template:
            notes.append("template: container %s exists (made from %s); a template is used only when a container is "
                         "created, so %s was not applied" % (config.name, config.template or "an unknown template", template))
    for key, as_size, how in (("diskspace", True, "ovz_quota's diskspace"), ("diskinodes", False, "ovz_quota's diskinodes")):
        if params.get(key):
            wanted = parse_pair(params[key], key, as_size=as_size)
            if list(wanted) != list(getattr(config, key)):
                notes.append("%s: is used only when a container is created; container %s exists, so %s was not applied "
                             "(change it with %s)" % (key, config.name, params[key], how))
    return notes


def _plan_unprivileged(plan: ContainerPlan, config: ContainerConfig, value: Optional[bool]) -> None:
    """``unprivileged`` of an existing container changes only while it is stopped (a start in the same call follows)."""
    if value is None or plan.wanted == State.ABSENT:
        plan.tracker.add("unprivileged", config.unprivileged, config.unprivileged if plan.wanted != State.ABSENT else None)
        return
    plan.tracker.add("unprivileged", config.unprivileged, value)
    if value == config.unprivileged:
        return
    if plan.current != State.STOPPED:
        raise StateConflict("container %s is %s; unprivileged can only be changed while it is stopped"
                            % (plan.name, plan.current), "unprivileged")
    plan.unprivileged = value


def apply_container(manager: ContainerManager, plan: ContainerPlan, params: Mapping[str, Any],
                    before_run_state: Optional[Callable[[], None]] = None) -> None:
    """Make the planned changes. ``before_run_state`` runs after the create and the settings,
    before any start, stop or freeze (``ovz_fleet`` stores network, limits and quota there, so a
    new container starts with them)."""
    name, current, wanted = plan.name, plan.current, plan.wanted
    timeout = params.get("timeout", 60)
    if wanted == State.ABSENT:
        manager.destroy(name)
        return
    create_config = plan.create_config
    if create_config is not None:
        manager.create(name, params["template"], layout=create_config.layout, hostname=create_config.hostname,
                       init=create_config.init, onboot=create_config.onboot,
                       diskspace=create_config.diskspace, diskinodes=create_config.diskinodes,
                       unprivileged=create_config.unprivileged)
        if create_config.bootorder or create_config.labels or create_config.seccomp_allow:
            manager.update(name, bootorder=create_config.bootorder, labels=create_config.labels,
                           seccomp_allow=create_config.seccomp_allow)
        current = State.STOPPED
    if plan.settings:
        manager.update(name, **plan.settings)
    if plan.unprivileged is not None:
        manager.set_unprivileged(name, plan.unprivileged)
    if before_run_state is not None:
        before_run_state()
    if plan.restart and current in RUNNING_STATES:
        manager.stop(name, timeout=timeout)
        current = State.STOPPED
    if wanted in RUNNING_STATES and current in STOPPED_STATES:
        lifecycle.start(manager, name, wait_boot=bool(params.get("wait_boot")), timeout=timeout)   # resumes a suspended one
        current = State.RUNNING
    if wanted == State.RUNNING and current == State.FROZEN:
        manager.thaw(name)
    elif wanted == State.FROZEN and current == State.RUNNING:
        manager.freeze(name)
    elif wanted == State.STOPPED and current in RUNNING_STATES:
        manager.stop(name, timeout=timeout)


# -- ovz_network ------------------------------------------------------------------------------
@dataclass
class NetworkStep:
    """A planned network change of an existing container and what applying it needs."""

    config: ContainerConfig
    running: bool
    runtime: Optional[Dict[str, Any]]
    runtime_path: str
    plan: Optional[network.NetworkPlan]

    @property
    def planned(self) -> network.NetworkPlan:
        """The plan, which ``plan_network`` sets (a step without one is a caller's bug)."""
        if self.plan is None:
            raise ValueError("network step of %s without a plan" % self.config.name)
        return self.plan


def other_networks(manager: ContainerManager, name: str) -> List[Tuple[str, Dict[str, Any]]]:
    """The network settings of the node's other containers (for address conflicts)."""
    return [(other.name, other.network) for other in iter_configs(manager.layout) if other.name != name]


def network_step(manager: ContainerManager, name: str, plan: Optional[network.NetworkPlan] = None) -> NetworkStep:
    """The container's configuration and network runtime as they are now, with ``plan``."""
    config = manager.load(name)
    running = manager.status(name) in RUNNING_STATES
    runtime_path = network.runtime_path(manager.layout.run(name))
    runtime = network.load_runtime(runtime_path) if running else None
    return NetworkStep(config, running, runtime, runtime_path, plan)


def plan_network(manager: ContainerManager, name: str, params: Mapping[str, Any],
                 others: Optional[Iterable[Tuple[str, Dict[str, Any]]]] = None,
                 view: Optional[network.HostView] = None, probe: bool = True) -> NetworkStep:
    """Validate the network settings of an existing container (``params`` has the keys of
    ``ovz_network``; state absent removes them) and describe the change; touches nothing.
    ``others`` and ``view`` (the node's other networks and ``network.host_view()``) are read
    here when not given. With ``probe``, addresses the change newly gives are refused when a
    neighbour answers a duplicate-address probe (``params['dad_timeout']`` seconds)."""
    timeout = dad.validate_timeout(params.get("dad_timeout"))
    step = network_step(manager, name)
    desired = None if params.get("state") == "absent" else dict((key, params.get(key)) for key in NETWORK_SETTINGS)
    if others is None:
        others = other_networks(manager, name)
    step.plan = network.plan_network(name, manager.layout.data_dir, desired, step.config.network, step.runtime,
                                     step.running, others, view)
    if probe:
        network.check_duplicates(step.plan, timeout)
    return step


def plan_new_network(manager: ContainerManager, name: str, params: Mapping[str, Any],
                     others: Iterable[Tuple[str, Dict[str, Any]]],
                     view: Optional[network.HostView] = None) -> network.NetworkPlan:
    """Validate the network settings of a container that does not exist yet; touches nothing."""
    desired = dict((key, params.get(key)) for key in NETWORK_SETTINGS)
    return network.plan_network(name, manager.layout.data_dir, desired, {}, None, False, others, view)


def apply_network(manager: ContainerManager, step: NetworkStep,
                  warn: Callable[[str], None] = lambda text: None) -> Optional[Dict[str, Any]]:
    """Change the running container first, then store the settings; a failed live change is undone.
    The caller holds the container's lock."""
    config, result, runtime = step.config, step.planned, step.runtime
    name = config.name
    if step.running:
        live = manager.runtime(name)
        if live is None:   # the caller's lock keeps the state file: only a bug gets here
            raise StateConflict("container %s is not running" % name, "name")
        init_pid = live.init_pid
        node = manager.layout.node_id()
        try:
            runtime = network.apply_network_live(name, result.after, init_pid, manager.layout.data_dir, runtime,
                                                 step.runtime_path, node=node)
        except Exception:
            try:
                network.apply_network_live(name, result.before, init_pid, manager.layout.data_dir,
                                           network.load_runtime(step.runtime_path), step.runtime_path, node=node)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        for warning in (runtime or {}).get("warnings", []):
            warn(warning)
    config.network = result.after
    manager.store.save(config)
    return runtime


# -- ovz_quota --------------------------------------------------------------------------------
def quota_request(params: Mapping[str, Any]) -> QuotaRequest:
    """The validated request of ``ovz_quota``'s options (entries' unset keys dropped)."""
    entries = {}
    for key in ("users", "groups"):
        if params.get(key) is not None:
            entries[key] = [dict((k, v) for k, v in entry.items() if v is not None) for entry in params[key]]
    return QuotaRequest.parse(dict(params, **entries))
