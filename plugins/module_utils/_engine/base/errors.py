# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Errors raised by the engine.

Every error that comes from bad input carries the name of the parameter at
fault, so the Ansible layer can fail with a message that names it.
"""

from __future__ import annotations


class OvzError(Exception):
    """A failure the operator can act on; ``param`` names the input at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def __str__(self) -> str:
        text = super().__str__()
        if self.param and self.param not in text:
            return "%s: %s" % (self.param, text)
        return text


class InvalidParameter(OvzError):
    """The value of a parameter is malformed or out of range."""


class StateConflict(OvzError):
    """The request cannot be met from the container's current state."""


class KernelUnsupported(OvzError):
    """The host kernel lacks a facility the request needs."""


class NoSuchContainer(StateConflict):
    """The named container does not exist on this node."""


class ContainerRunning(StateConflict):
    """The request needs the container stopped, and it runs (or is frozen)."""


class NotRoot(OvzError):
    """The caller is not root, which every operation on a node needs."""


class HostFileError(OvzError, OSError):
    """A file system of the host refused a write (full, read-only, out of inodes): the message names
    the path and what was being written. Still an ``OSError``, for callers that treat writes as best effort."""

    def __init__(self, path: str, what: str, cause: OSError, param: str | None = None) -> None:
        reason = cause.strerror or str(cause)
        OvzError.__init__(self, "writing %s to %s failed: %s" % (what, path, reason), param)
        self.errno, self.strerror, self.filename = cause.errno, reason, path

    def __str__(self) -> str:
        text = str(self.args[0]) if self.args else ""
        if self.param and self.param not in text:
            return "%s: %s" % (self.param, text)
        return text
