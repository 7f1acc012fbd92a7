# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The host side of an interactive command in a container: relaying the caller's stdio.

A command started in a container never gets a descriptor of the caller (a host terminal inside
would let root there type into the operator's shell with TIOCSTI). ``ovzctl exec`` relays the
caller's stdin, stdout and stderr through pipes made for the command; ``ovzctl enter``, and
``exec`` on a terminal, relay the caller's terminal through a pty of the container's own devpts
(``process.open_container_pty``). While a pty is relayed the caller's terminal is in raw mode, so
that line editing and ^C are done by the line discipline inside; its window size follows the
caller's (SIGWINCH); signals sent to the caller go to the command's foreground process group; and
the terminal's mode and foreground process group are restored on every way out.

This file never forks, enters a namespace or opens a path of a container.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import select
import signal
import termios
import threading
import time
import tty
from typing import Callable, Dict, Iterator, Optional

# What a caller passes on (a closed terminal, ^C from another shell, a service manager's stop).
FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
CHUNK = 65536


def window_size() -> Optional[bytes]:
    """The caller's terminal size (struct winsize), from stdin or stdout; None without a terminal."""
    for fd in (0, 1, 2):
        try:
            return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
    return None


def copy_out(source: int, sink: int) -> None:
    """Whatever ``source`` still holds, to ``sink`` (without waiting for more)."""
    os.set_blocking(source, False)
    while True:
        try:
            chunk = os.read(source, CHUNK)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        _write(sink, chunk)


def _write(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to the caller's side; False once that side is gone (EPIPE)."""
    try:
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                select.select([], [fd], [])
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _signals(forward: Callable[[int], None], on_winch: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Pass the caller's signals on while relaying (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for signum in FORWARDED_SIGNALS:
            previous[signum] = signal.signal(signum, lambda signum, _frame: forward(signum))
        if on_winch is not None:
            previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda _s, _f: on_winch())
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclasses.dataclass
class Deadline:
    """When (``time.monotonic()``) a relayed command is ended, and what ends it."""
    at: float
    action: Callable[[], None]


def _kill_group(pgid: Optional[int], signum: int) -> None:
    if pgid:
        try:
            os.killpg(pgid, signum)
        except OSError:
            pass


def _relay(helper: int, source: int, command_in: int, outputs: Dict[int, int], close_in_at_eof: bool,
           at_eof: bytes = b"", deadline: Optional[Deadline] = None) -> bool:
    """Copy the caller's ``source`` to ``command_in`` and each of ``outputs`` (command side → caller
    side) until the helper (the command's parent) has ended, then what is left in ``outputs``.
    When the caller's input ends, ``command_in`` is closed (``close_in_at_eof``) or gets ``at_eof``
    (a pty's end-of-file character: a pty cannot be half-closed), again every second while the
    command runs on: an EOF that reaches a shell before its line editor is set up is lost.
    At ``deadline`` its action ends the command, and the relay goes on until the helper ends; returns
    whether it did.

    Output written after that by processes the command left behind is not waited for: they hold
    the pipes or the pty, not the caller."""
    pidfd = os.pidfd_open(helper)
    pending = b""
    reading = source >= 0
    os.set_blocking(command_in, False)
    for fd in outputs:
        os.set_blocking(fd, False)
    open_outputs = dict(outputs)
    timed_out = False
    try:
        while True:
            readers = [pidfd] + list(open_outputs)
            if reading and not pending:
                readers.append(source)
            writers = [command_in] if pending else []
            repeat_eof = bool(at_eof) and source >= 0 and not reading and not pending
            waits = [1.0] if repeat_eof else []
            if deadline is not None and not timed_out:
                waits.append(max(0.0, deadline.at - time.monotonic()))
            ready_r, ready_w, _x = select.select(readers, writers, [], min(waits) if waits else None)
            if deadline is not None and not timed_out and time.monotonic() >= deadline.at:
                timed_out = True
                deadline.action()
            if repeat_eof and not ready_r:
                pending = at_eof
                continue
            for fd in ready_r:
                if fd in open_outputs and not _forward(fd, open_outputs[fd]):
                    del open_outputs[fd]
            if source in ready_r:
                try:
                    pending = os.read(source, CHUNK)
                except OSError:
                    pending = b""
                if not pending:
                    reading = False
                    pending = at_eof
                    if close_in_at_eof:
                        os.close(command_in)
                        command_in = -1
            if command_in in ready_w:
                try:
                    pending = pending[os.write(command_in, pending):]
                except BlockingIOError:
                    pass
                except OSError:        # the command closed its input (EPIPE), or the pty hung up (EIO)
                    pending = b""
                    reading = False
            if pidfd in ready_r:
                for fd, sink in open_outputs.items():
                    copy_out(fd, sink)
                return timed_out
    finally:
        os.close(pidfd)
        if close_in_at_eof and command_in >= 0:
            os.close(command_in)


def _forward(fd: int, sink: int) -> bool:
    """One read from the command's side to the caller's; False at its end (EOF, or EIO of a pty
    whose every slave is closed)."""
    try:
        chunk = os.read(fd, CHUNK)
    except BlockingIOError:
        return True
    except OSError as exc:
        if exc.errno == errno.EIO:
            return False
        raise
    if not chunk:
        return False
    _write(sink, chunk)
    return True


def relay_pipes(helper: int, command_pid: Optional[int], in_w: int, out_r: int, err_r: int,
                deadline: Optional[Deadline] = None) -> bool:
    """``ovzctl exec`` without a terminal: the caller's stdio through the command's pipes.
    ``in_w`` is closed here (at the end of the caller's input, or at the end). True if ``deadline`` ended it."""
    with _signals(lambda signum: _kill_group(command_pid, signum)):
        return _relay(helper, 0 if _is_open(0) else -1, in_w, {out_r: 1, err_r: 2}, close_in_at_eof=True,
                      deadline=deadline)


def relay_pty(helper: int, command_pid: Optional[int], master: int, deadline: Optional[Deadline] = None) -> bool:
    """``ovzctl enter`` / ``exec -t``: the caller's terminal through the container's pty ``master``.
    True if ``deadline`` ended it."""
    def forward(signum: int) -> None:
        group: Optional[int]
        try:
            group = os.tcgetpgrp(master)   # the pty's foreground job inside (a host PID: we are there)
        except OSError:
            group = command_pid
        _kill_group(group, signum)

    def resize() -> None:
        size = window_size()
        if size is not None:
            try:
                fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            except OSError:
                pass

    with _raw_terminal(0), _signals(forward, resize):
        resize()
        # Input from a file or a pipe (``echo ls | ovzctl enter 101``): its end is the pty's EOF
        # character, so that the shell inside ends as it would at a terminal's ^D.
        at_eof = b"" if os.isatty(0) else bytes([termios.tcgetattr(master)[6][termios.VEOF][0]])
        return _relay(helper, 0 if _is_open(0) else -1, master, {master: 1}, close_in_at_eof=False, at_eof=at_eof,
                      deadline=deadline)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    """``fd`` in raw mode if it is a terminal; its mode and foreground process group restored after."""
    if not os.isatty(fd):
        yield
        return
    mode = termios.tcgetattr(fd)
    try:
        foreground = os.tcgetpgrp(fd)
    except OSError:
        foreground = None
    try:
        tty.setraw(fd, termios.TCSADRAIN)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, mode)
        if foreground is not None:
            try:
                if os.tcgetpgrp(fd) != foreground:
                    # Setting it from outside the foreground group stops us with SIGTTOU unless ignored.
                    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN) \
                        if threading.current_thread() is threading.main_thread() else None
                    try:
                        os.tcsetpgrp(fd, foreground)
                    finally:
                        if old is not None:
                            signal.signal(signal.SIGTTOU, old)
            except OSError:
                pass
