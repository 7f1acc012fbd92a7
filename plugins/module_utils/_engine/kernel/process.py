# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Starting a container's init, and running commands inside a running container.

There is no daemon: the init is started by a short-lived intermediate process
that exits at once, so the init is adopted by the host's init (or the nearest
subreaper) and keeps running after the caller is gone, as with ``vzctl start``.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import os
import platform
import select
import signal
import socket
import stat
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from . import namespaces as ns
from .idmap import become_root, other_userns
from .rootfs import RootfsSpec, enter_rootfs, stage_for_userns
from .seccomp_filter import Program

CONTAINER_NAMESPACES = (ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC | ns.CLONE_NEWNET
                        | ns.CLONE_NEWPID | ns.CLONE_NEWCGROUP)
ENTER_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class InitSpec:
    argv: List[str]
    rootfs: RootfsSpec
    cgroup_procs: List[str]             # v1 tasks files to join before unsharing
    cgroup2_dir: Optional[str]          # the cgroup2 directory the container is born in
    dropped_capabilities: Sequence[str]
    stdout_path: str                    # console log on the host
    env: Dict[str, str] = field(default_factory=dict)
    userns_fd: Optional[int] = None     # unprivileged: the container's user namespace (idmap.make_userns)
    root_tree_fd: Optional[int] = None  # unprivileged: the idmapped root mount to attach on rootfs.root
    seccomp: Optional[Program] = None   # the system calls denied inside (seccomp_filter.compile_filter)


class SpawnError(Exception):
    pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read_all(fd: int) -> bytes:
    chunks: List[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def fork_in_cgroup(cgroup2_dir: Optional[str]) -> int:
    """``os.fork`` whose child is born in ``cgroup2_dir`` (see ``namespaces.fork_into_cgroup``)."""
    if cgroup2_dir is None:
        return os.fork()
    fd = os.open(cgroup2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            return ns.fork_into_cgroup(fd)
        except OSError:
            return _fork_then_move(cgroup2_dir)
    finally:
        os.close(fd)


def _fork_then_move(cgroup2_dir: str) -> int:
    """Fallback of ``fork_in_cgroup``: the parent moves the child, which waits until it is moved.

    The move is done by the parent, so that a refusal raises there, once; a child that failed
    to move itself would carry the caller's code on in the wrong cgroup, a second time.
    """
    moved_r, moved_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(moved_w)
        ok = os.read(moved_r, 1)
        os.close(moved_r)
        if ok != b"1":
            os._exit(125)  # the parent could not move us (or died): do nothing at all
        return 0
    os.close(moved_r)
    verdict = b"0"
    try:
        with open(os.path.join(cgroup2_dir, "cgroup.procs"), "w") as handle:
            handle.write(str(pid))
        verdict = b"1"
    finally:
        os.write(moved_w, verdict)
        os.close(moved_w)
        if verdict != b"1":
            os.waitpid(pid, 0)
    return pid


def join_cgroups(procs_files: Sequence[str]) -> None:
    for procs in procs_files:
        with open(procs, "w") as handle:
            handle.write("0")


def process_starttime(pid: int) -> Optional[int]:
    """Start time (clock ticks since boot) of ``pid``; guards against PID reuse."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _child_fail(err_w: int, exc: BaseException) -> None:
    try:
        _write_all(err_w, ("%s: %s" % (type(exc).__name__, exc)).encode(errors="replace"))
    finally:
        os._exit(127)


def spawn_init(spec: InitSpec, before_go: Optional[Callable[[int], None]] = None) -> int:
    """Start the container's init; returns its PID as the host sees it.

    ``before_go(pid)`` runs in the caller once the namespaces exist and before
    init is exec'd (network setup moves interfaces into the netns then).
    """
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    console_fd = os.open(spec.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    middle = fork_in_cgroup(spec.cgroup2_dir)
    if middle == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(go_w)
            os.close(pid_r)
            os.close(err_r)
            os.setsid()
            join_cgroups(spec.cgroup_procs)
            if spec.userns_fd is not None:
                enter_userns(spec)
            ns.unshare(CONTAINER_NAMESPACES)
            init_pid = os.fork()
            if init_pid == 0:
                os.close(pid_w)
                _init_child(spec, go_r, err_w, console_fd)
            _write_all(pid_w, struct.pack("i", init_pid))
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            _child_fail(err_w, exc)
    os.close(console_fd)
    os.close(go_r)
    os.close(pid_w)
    os.close(err_w)
    try:
        _pid, status = os.waitpid(middle, 0)
        data = _read_all(pid_r)
        if len(data) != 4:
            raise SpawnError(_read_all(err_r).decode(errors="replace") or "container setup failed (status %d)" % status)
        init_pid = struct.unpack("i", data)[0]
        try:
            if before_go is not None:
                before_go(init_pid)
            _write_all(go_w, b"g")
            os.close(go_w)
            go_w = -1
            message = _read_all(err_r)  # EOF without data: exec succeeded
        except BaseException:
            _kill_quietly(init_pid)
            raise
        if message:
            _kill_quietly(init_pid)
            raise SpawnError(message.decode(errors="replace"))
        return init_pid
    finally:
        for fd in (go_w, pid_r, err_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def enter_userns(spec: InitSpec) -> None:  # pragma: no cover - runs in the forked child
    """Unprivileged: stage the idmapped root and the host files the container needs (still root on
    the host, in a private mount namespace), then join the container's user namespace as its
    root; the namespaces unshared next belong to it."""
    ns.unshare(ns.CLONE_NEWNS)
    ns.mount(None, "/", None, ns.MS_REC | ns.MS_SLAVE)
    spec.rootfs = stage_for_userns(spec.rootfs, spec.root_tree_fd)
    if spec.root_tree_fd is not None:
        os.close(spec.root_tree_fd)
    if spec.userns_fd is None:
        raise SpawnError("no user namespace to enter")
    ns.setns(spec.userns_fd, ns.CLONE_NEWUSER)
    os.close(spec.userns_fd)
    become_root()


def enter_container(init_pid: int) -> None:
    """Join every namespace of the container whose init is ``init_pid``: its time namespace, then its user
    namespace (if it has one), then the others.

    A restored unprivileged container's cgroup namespace belongs to the host's user namespace (CRIU makes
    it outside the container's): it is joined before the user namespace, while this process still holds
    the host's rights over it."""
    join_time_namespace(init_pid)
    if other_userns(init_pid):
        early = tuple(kind for kind in ("cgroup",) if not ns.owned_by_userns_of(init_pid, kind))
        ns.enter_namespaces(init_pid, early)
        ns.enter_namespaces(init_pid, ("user",) + tuple(kind for kind in ENTER_ORDER if kind not in early))
        become_root()
    else:
        ns.enter_namespaces(init_pid, ENTER_ORDER)


def join_time_namespace(pid: int) -> None:
    """Join the time namespace ``pid`` lives in (its children are born there too), unless it is this
    process's own already.

    A restored container's init lives in the time namespace CRIU made for it (its clocks carried
    over); a process entering from the host's would be in another one, which CRIU can dump but never
    restore. Joined first, while this process still holds the host's rights over the host's namespaces
    (an unprivileged container's root has none over them).
    """
    try:
        fd = os.open("/proc/%d/ns/time" % pid, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return   # a kernel without time namespaces
    try:
        if os.path.samestat(os.fstat(fd), os.stat("/proc/self/ns/time")):
            return
        ns.setns(fd, ns.CLONE_NEWTIME)
    finally:
        os.close(fd)


def children(pid: int) -> List[int]:
    """The PIDs of ``pid``'s children (``/proc/<pid>/task/*/children``)."""
    result: List[int] = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return result
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as handle:
                result.extend(int(p) for p in handle.read().split())
        except OSError:
            pass
    return result


def process_tree(root: int) -> List[int]:
    """``root`` and all its descendants."""
    seen: List[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children(pid))
    return seen


_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "ppc64le": 354, "s390x": 343}
KCMP_VM = 1
_libc = ns.load_libc()


def shares_address_space(pid: int, other: int) -> bool:
    """Whether two processes share one address space (kcmp(2), as CRIU itself compares them)."""
    number = _SYS_KCMP.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, "kcmp: unsupported architecture %s" % platform.machine())
    result = _libc.syscall(number, pid, other, KCMP_VM, 0, 0)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return bool(result == 0)


def vfork_in_flight(pids: Sequence[int]) -> List[Tuple[int, int]]:
    """The (parent, child) pairs among ``pids`` whose child still shares its parent's memory: a vfork
    whose child has not exec'd or exited yet (or a clone with CLONE_VM but without CLONE_THREAD).
    Meanwhile the parent sleeps uninterruptibly, where no ptrace stop reaches it."""
    found = []
    for pid in pids:
        for child in children(pid):
            try:
                if shares_address_space(pid, child):
                    found.append((pid, child))
            except OSError:
                continue    # gone meanwhile
    return found


def end_processes(matches: Callable[[int], bool], timeout: float = 5.0) -> List[int]:
    """SIGKILL every other process for which ``matches(pid)`` holds, and wait (up to ``timeout``) until
    they are gone; the PIDs ended. ``matches`` may raise OSError for a process that went away."""
    ended: List[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if not matches(int(entry)):
                continue
        except OSError:
            continue
        _kill_quietly(int(entry))
        ended.append(int(entry))
    deadline = time.monotonic() + timeout
    while any(process_starttime(pid) is not None for pid in ended) and time.monotonic() < deadline:
        time.sleep(0.01)
    return ended


def end_processes_working_in(directories: Sequence[str], timeout: float = 5.0) -> List[int]:
    """End every process whose working directory is one of ``directories`` or below (also when it was
    removed meanwhile). For transfers into a directory about to be removed: an rsync receiver works in
    its destination and would fill it again behind the removal."""
    roots = [os.path.realpath(d).rstrip("/") for d in directories]

    def works_there(pid: int) -> bool:
        cwd = os.readlink("/proc/%d/cwd" % pid)
        if cwd.endswith(" (deleted)"):
            cwd = cwd[:-len(" (deleted)")]
        return any(cwd == root or cwd.startswith(root + "/") for root in roots)

    return end_processes(works_there, timeout)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def default_signals() -> None:
    """Every signal to its default action, and none blocked, as a process inside starts.

    Ignored signals and the mask survive execve: a caller started with ``nohup`` or ``&`` from a
    script (SIGINT and SIGQUIT ignored) would hand that on, and a shell inside cannot even trap a
    signal that was ignored when it started."""
    for signum in range(1, signal.NSIG):
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _init_child(spec: InitSpec, go_r: int, err_w: int, console_fd: int) -> None:  # pragma: no cover
    try:
        if os.read(go_r, 1) != b"g":
            os._exit(0)  # the caller gave up: vanish without a trace
        os.close(go_r)
        enter_rootfs(spec.rootfs)
        ns.drop_bounding_capabilities(spec.dropped_capabilities)
        # Not the keyring of whoever started the container: its keys would be the container's to use.
        ns.join_new_session_keyring()
        if spec.seccomp is not None:
            spec.seccomp.install()
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(console_fd, 1)
        os.dup2(console_fd, 2)
        ns.close_fds_except([err_w])
        default_signals()
        env = {"PATH": DEFAULT_PATH, "container": "ovz", "HOME": "/root", "TERM": "linux"}
        env.update(spec.env)
        os.execve(spec.argv[0], spec.argv, env)
    except BaseException as exc:  # noqa: BLE001 - the forked child reports anything to the parent
        _child_fail(err_w, exc)


DEFAULT_OUTPUT_LIMIT = 1 << 20   # bytes of each stream an exec keeps (its last ones) unless told otherwise


@dataclass
class OutputPolicy:
    """How much of a command's output the host holds. A container's command may print without end, and the
    host must not follow it: each stream keeps only its last ``limit`` bytes and counts what it dropped.

    ``stdout_to`` (a host file descriptor) receives the whole stdout instead, written as it arrives and never
    held; the command itself only ever sees the pipe. ``end_on_overflow`` kills the command as soon as a
    held stream passes ``limit`` (when only a complete output is of any use)."""

    limit: int = DEFAULT_OUTPUT_LIMIT
    stdout_to: Optional[int] = None
    end_on_overflow: bool = False


@dataclass
class ExecResult:
    rc: int
    stdout: bytes
    stderr: bytes
    stdout_dropped: int = 0     # bytes of the stream's beginning not kept (OutputPolicy.limit)
    stderr_dropped: int = 0
    timed_out: bool = False     # ended (killed) at its timeout


TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
PTMX_DEVICE = (5, 2)


def open_container_pty() -> Tuple[int, int]:
    """A pty pair of the container's own devpts, for a process that has entered its mount namespace.

    ``/dev/pts/ptmx`` is opened without following any symlink and refused unless it is the pty
    multiplexer, so whatever root inside put there, the pair is one of a devpts the container
    itself can reach; the slave comes from the master (TIOCGPTPEER), never by a path."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        master = ns.open_in_root(root, "dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK,
                                 needed_for="to open a pty inside a container", resolve=ns.RESOLVE_NO_SYMLINKS)
    finally:
        os.close(root)
    try:
        info = os.fstat(master)
        if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != PTMX_DEVICE:
            raise OSError(errno.EINVAL, "/dev/pts/ptmx of the container is not the pty multiplexer")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


@dataclass
class _Command:
    """What the exec helper runs, and with what."""
    init_pid: int
    argv: Sequence[str]
    cgroup_procs: Sequence[str]
    dropped_capabilities: Sequence[str]
    env: Dict[str, str]
    cwd: str
    stdio: Tuple[int, int, int]         # the helper's own stdio; the command's unless it gets a pty
    report_fd: int = -1                 # a unix socket: the command's PID (and the pty master) go back on it
    tty: bool = False
    winsize: Optional[bytes] = None     # the pty's first window size
    seccomp: Optional[Program] = None   # the container's filter, loaded before the command runs


def _exec_helper(command: _Command) -> None:  # pragma: no cover - runs in the forked child
    """The helper between the caller and the command: joins the container, then forks the command into
    its pid namespace and waits for it, exiting with its status.

    Nothing of the host may be in reach of the container through it. It is non-dumpable before it
    joins anything, so that the command's process, visible inside from its fork to its exec, can
    neither be attached to by a tracer without CAP_SYS_PTRACE over the host nor have its memory (a
    copy of the caller's) read; before that fork it has left the caller's session keyring for a
    fresh one and holds no capability root inside lacks; it keeps only the descriptors made for
    the command."""
    try:
        ns.prctl(ns.PR_SET_DUMPABLE, 0)
        # Moved above 2 first: a caller with closed stdio may have been handed a pipe as fd 0..2.
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in command.stdio]
        for target, fd in enumerate(moved):
            os.dup2(fd, target)
        report = command.report_fd
        if report >= 0:
            report = fcntl.fcntl(report, fcntl.F_DUPFD_CLOEXEC, 3)
        # Nor the pipes of other commands the caller runs at the same time (threads): held
        # here, they would keep those commands from seeing EOF until this one ends.
        # (close_range: no allocation in a child that may be forked from a threaded caller.)
        _close_from(3, keep=report)
        join_cgroups(command.cgroup_procs)
        enter_container(command.init_pid)
        ns.join_new_session_keyring()
        if command.seccomp is not None:
            command.seccomp.install()   # while root inside still holds CAP_SYS_ADMIN, which loading it asks
        ns.limit_capabilities(command.dropped_capabilities)
        master = slave = -1
        if command.tty:
            master, slave = open_container_pty()
            if command.winsize:
                fcntl.ioctl(master, TIOCSWINSZ, command.winsize)
        try:
            grandchild = ns.raw_fork()
        except OSError:
            grandchild = os.fork()
        if grandchild == 0:
            _run_command(command, slave)
        if report >= 0:
            sock = socket.socket(fileno=report)
            socket.send_fds(sock, [struct.pack("i", grandchild)], [master] if master >= 0 else [])
            sock.close()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
        _pid, status = os.waitpid(grandchild, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xff if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
    except BaseException as exc:  # noqa: BLE001 - the forked child says why, then exits
        try:
            os.write(2, ("ovz exec: %s\n" % exc).encode(errors="replace"))
        finally:
            os._exit(125)


def _close_from(low: int, keep: int = -1) -> None:
    top = os.sysconf("SC_OPEN_MAX")
    if keep >= low:
        os.closerange(low, keep)
        os.closerange(keep + 1, top)
    else:
        os.closerange(low, top)


def _run_command(command: _Command, slave: int) -> None:  # pragma: no cover - runs in the forked child
    # A session of its own, as a daemon's: a signal to its process group (kill(0)) stays inside, what
    # it leaves running belongs to the container alone, and CRIU can checkpoint it (a session whose
    # leader is outside the container's pid namespace cannot be restored).
    os.setsid()
    if slave >= 0:
        for target in (0, 1, 2):
            os.dup2(slave, target)
        fcntl.ioctl(0, TIOCSCTTY, 0)
    # Only stdio goes in: descriptors the caller leaked (without O_CLOEXEC) are the
    # host's, and a daemon keeping one could not be checkpointed either.
    _close_from(3)
    default_signals()
    os.chdir(command.cwd)
    full_env = {"PATH": DEFAULT_PATH, "HOME": "/root", "container": "ovz", "TERM": "dumb"}
    full_env.update(command.env)
    try:
        os.execvpe(command.argv[0], list(command.argv), full_env)
    except OSError as exc:
        os.write(2, ("%s: %s\n" % (command.argv[0], exc.strerror)).encode())
        os._exit(127 if exc.errno == 2 else 126)


def _start_helper(command: _Command, cgroup2_dir: Optional[str]) -> int:
    child = fork_in_cgroup(cgroup2_dir)
    if child == 0:  # pragma: no cover - runs in the forked child
        _exec_helper(command)
    return child


def _exit_code(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def exec_in(init_pid: int, argv: Sequence[str], cgroup_procs: Sequence[str], cgroup2_dir: Optional[str],
            dropped_capabilities: Sequence[str],
            env: Optional[Dict[str, str]] = None, stdin: Optional[bytes] = None, capture: bool = True,
            cwd: str = "/", timeout: Optional[float] = None, tty: bool = False,
            output: Optional[OutputPolicy] = None, seccomp: Optional[Program] = None) -> ExecResult:
    """Run ``argv`` inside the container of ``init_pid`` (``vzctl exec``), in a session of its own.

    The command gets descriptors made for it and nothing else of the caller: with ``capture``,
    pipes whose output is returned; without, pipes relayed to and from the caller's stdio as
    they flow; with ``tty`` (not captured) a pty of the container's own devpts, relayed to the
    caller's terminal (``vzctl enter``). ``seccomp``: the container's filter, which the command
    runs under as its init does.
    """
    if capture and tty:
        raise ValueError("a captured command gets pipes, not a terminal")
    if not capture:
        return _exec_relayed(init_pid, argv, cgroup_procs, cgroup2_dir, dropped_capabilities, env or {}, cwd, tty,
                             timeout, seccomp)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    command = _Command(init_pid, argv, cgroup_procs, dropped_capabilities, env or {}, cwd, (in_r, out_w, err_w),
                       seccomp=seccomp)
    try:
        child = _start_helper(command, cgroup2_dir)
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    out, err, timed_out = _pump(in_w, stdin or b"", out_r, err_r, timeout, lambda: _end_command(child), output)
    _pid, status = os.waitpid(child, 0)
    return ExecResult(_exit_code(status), out.value(), err.value(), out.dropped, err.dropped, timed_out)


def _exec_relayed(init_pid: int, argv: Sequence[str], cgroup_procs: Sequence[str], cgroup2_dir: Optional[str],
                  dropped_capabilities: Sequence[str], env: Dict[str, str], cwd: str, tty: bool,
                  timeout: Optional[float] = None, seccomp: Optional[Program] = None) -> ExecResult:
    from . import terminal
    began = time.monotonic()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    mine: List[int] = []           # the caller's ends
    given: List[int] = []          # the helper's, closed here once it has them
    try:
        if tty:
            # The helper's stdio until the command has the pty: nothing of the caller's terminal.
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            mine += [err_r]
            given += [null, err_w]
            stdio = (null, err_w, err_w)
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            mine += [in_w, out_r, err_r]
            given += [in_r, out_w, err_w]
            stdio = (in_r, out_w, err_w)
        command = _Command(init_pid, argv, cgroup_procs, dropped_capabilities, env, cwd, stdio,
                           report_fd=theirs.fileno(), tty=tty, winsize=terminal.window_size() if tty else None,
                           seccomp=seccomp)
        try:
            child = _start_helper(command, cgroup2_dir)
        finally:
            theirs.close()
            for fd in given:
                os.close(fd)
        try:
            message, fds, _flags, _addr = socket.recv_fds(ours, 16, 1)
        except OSError:
            message, fds = b"", []
        ours.close()
        command_pid = struct.unpack("i", message[:4])[0] if len(message) >= 4 else None
        deadline = None if timeout is None else terminal.Deadline(began + timeout, lambda: _end_command(child))
        timed_out = False
        if tty and fds:
            mine.append(fds[0])
            timed_out = terminal.relay_pty(child, command_pid, fds[0], deadline)
        elif not tty:
            mine.remove(in_w)   # the relay's now: it closes it at the end of the caller's input
            timed_out = terminal.relay_pipes(child, command_pid, in_w, out_r, err_r, deadline)
        _pid, status = os.waitpid(child, 0)
        if tty:
            # The helper's own failure (it had no pty to say it on).
            terminal.copy_out(err_r, 2)
        return ExecResult(_exit_code(status), b"", b"", timed_out=timed_out)
    finally:
        ours.close()
        for fd in mine:
            try:
                os.close(fd)
            except OSError:
                pass


def _end_command(child: int) -> None:
    """At an exec's deadline: kill the command (the exec helper's child, in the container's pid namespace)
    with its process group, then the helper. The helper alone is not enough: the command, reparented to
    the container's init, would run on and hold the output pipes open."""
    for command in children(child):
        try:
            if os.getpgid(command) == command:    # its own session, its process group
                os.killpg(command, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _kill_quietly(command)
    _kill_quietly(child)


class _Tail:
    """The last ``limit`` bytes of a stream, and how many came before them. Chunks are dropped whole
    from the front (and the oldest kept one is cut once, at the end), so each byte is copied once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: Deque[bytes] = collections.deque()
        self.held = 0
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.held += len(chunk)
        while self.chunks and self.held - len(self.chunks[0]) >= self.limit:
            self.held -= len(self.chunks[0])
            self.dropped += len(self.chunks.popleft())

    @property
    def overflowed(self) -> bool:
        return bool(self.dropped) or self.held > self.limit

    def value(self) -> bytes:
        data = b"".join(self.chunks)
        excess = max(0, len(data) - self.limit)
        self.chunks.clear()
        self.dropped += excess
        self.held = 0
        return data[excess:]


def _pump(in_w: int, data: bytes, out_r: int, err_r: int, timeout: Optional[float],
          on_deadline: Callable[[], None], output: Optional[OutputPolicy] = None) -> Tuple[_Tail, _Tail, bool]:
    """Feed ``data`` to the command and read both streams until they close, each within the policy's bound.
    At the deadline (or a held stream's overflow, if the policy says so) ``on_deadline`` ends the command;
    the streams are read on until the pipes close, still bounded. Also returns whether the deadline ended it."""
    policy = output or OutputPolicy()
    tails = {out_r: _Tail(policy.limit), err_r: _Tail(policy.limit)}
    writers = [in_w] if data else []
    if not data:
        os.close(in_w)
    readers = [out_r, err_r]
    deadline = None if timeout is None else time.monotonic() + timeout
    ended = timed_out = False
    while readers or writers:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready_r, ready_w, _errors = select.select(readers, writers, [], wait)
        if not ready_r and not ready_w:
            on_deadline()
            ended = timed_out = True
            deadline = None
            continue
        for fd in ready_w:
            try:
                written = os.write(fd, data[:65536])
                data = data[written:]
            except BrokenPipeError:
                data = b""
            if not data:
                os.close(fd)
                writers.remove(fd)
        for fd in ready_r:
            chunk = os.read(fd, 65536)
            if not chunk:
                os.close(fd)
                readers.remove(fd)
            elif fd == out_r and policy.stdout_to is not None:
                _write_all(policy.stdout_to, chunk)
            else:
                tails[fd].add(chunk)
                if policy.end_on_overflow and not ended and tails[fd].overflowed:
                    on_deadline()
                    ended = True
                    deadline = None
    return tails[out_r], tails[err_r], timed_out


def run_bounded(argv: Sequence[str], stdin: Optional[bytes] = None, timeout: Optional[float] = None,
                output: Optional[OutputPolicy] = None) -> ExecResult:
    """A host command (such as the ssh that runs ``ovzctl exec`` on a remote node) whose output comes from a
    container: read as ``exec_in`` reads it, within ``output``'s bound. Killed at ``timeout``."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(list(argv), stdin=in_r, stdout=out_w, stderr=err_w)  # pylint: disable=consider-using-with
    except BaseException:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    out, err, timed_out = _pump(in_w, stdin or b"", out_r, err_r, timeout, proc.kill, output)
    status = proc.wait()
    return ExecResult(status if status >= 0 else 128 - status, out.value(), err.value(), out.dropped, err.dropped,
                      timed_out)
