# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""One command run inside a container as a task runs it (``ovz_exec``): ``creates``/``removes``, check mode.

The answer is shaped as ``ansible.builtin.command``'s: ``rc``, ``stdout`` and ``stderr`` as text
(trailing newlines dropped), their lines, ``cmd``; ``failed`` with ``msg`` (and ``param``) for a
command that exited non-zero or outlived its timeout, since its output is part of the answer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..base.errors import InvalidParameter, NoSuchContainer, StateConflict
from ..base.sizes import parse_size
from ..base.states import State
from ..container.manager import ContainerManager
from ..kernel.process import OutputPolicy


def _text(data: bytes) -> str:
    # Undecodable bytes travel as surrogates, as Ansible's to_text does.
    return data.decode("utf-8", "surrogateescape").rstrip("\r\n")


def _not_run(argv: List[str], changed: bool, stdout: str = "", **extra: Any) -> Dict[str, Any]:
    return dict(changed=changed, rc=0, stdout=stdout, stderr="", stdout_lines=stdout.splitlines(), cmd=argv,
                stdout_truncated=0, stderr_truncated=0, **extra)


def run_command(manager: ContainerManager, name: str, argv: Optional[List[str]] = None,
                command: Optional[str] = None, stdin: Optional[str] = None, env: Optional[Dict[str, Any]] = None,
                timeout: int = 0, output_limit: str = "1M", creates: Optional[str] = None,
                removes: Optional[str] = None, check_mode: bool = False) -> Dict[str, Any]:
    """Run ``argv`` (or ``command`` by ``/bin/sh -c``) inside running container ``name``, unless
    ``creates`` exists or ``removes`` does not (both looked up inside, as the container sees them)."""
    argv = list(argv) if argv else ["/bin/sh", "-c", command or ""]
    limit = parse_size(output_limit, "output_limit")
    if timeout < 0:
        raise InvalidParameter("must not be negative, got %d" % timeout, "timeout")
    for param, path in (("creates", creates), ("removes", removes)):
        if path and not path.startswith("/"):
            raise InvalidParameter("must be an absolute path inside the container, got %r" % path, param)
    status = manager.status(name)
    if status != State.RUNNING and check_mode:
        # An earlier task of the same check run would have made or started it: the command would run then.
        return _not_run(argv, True, msg="the command would run once container %s runs (it is %s now)"
                        % (name, status))
    if status == State.ABSENT:
        raise NoSuchContainer("container %s does not exist" % name, "name")
    if status != State.RUNNING:
        raise StateConflict("container %s is %s; it must be running" % (name, status), "name")
    if creates and manager.path_exists_inside(name, creates, "creates"):
        return _not_run(argv, False, "skipped, since %s exists" % creates)
    if removes and not manager.path_exists_inside(name, removes, "removes"):
        return _not_run(argv, False, "skipped, since %s does not exist" % removes)
    if check_mode:
        return _not_run(argv, True, msg="the command would have run (not in check mode)")
    done = manager.exec(name, argv, stdin=stdin.encode("utf-8", "surrogateescape") if stdin else None,
                        env=dict((str(key), str(value)) for key, value in (env or {}).items()),
                        timeout=timeout or None, output=OutputPolicy(limit=limit))
    stdout, stderr = _text(done.stdout), _text(done.stderr)
    result: Dict[str, Any] = dict(changed=True, rc=done.rc, stdout=stdout, stderr=stderr,
                                  stdout_lines=stdout.splitlines(), cmd=argv, stdout_truncated=done.stdout_dropped,
                                  stderr_truncated=done.stderr_dropped, timed_out=done.timed_out)
    if done.timed_out:
        result.update(failed=True, param="timeout",
                      msg="timeout: the command did not end within %d s; it was killed with its process group"
                      % timeout)
    elif done.rc != 0:
        result.update(failed=True, msg="the command exited with status %d" % done.rc)
    return result
