# -*- coding: utf-8 -*-
"""A host's links as pyroute2 gives them (``["index"]``, ``get_attr``), in a ``HostView`` that the network
checks take instead of reading the host through netlink."""

from __future__ import annotations

from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.network import HostView


class FakeLink(dict):
    """A link as pyroute2 gives it: ``["index"]`` and ``get_attr`` (kind, MTU, alias)."""

    def __init__(self, name, index, kind=None, mtu=1500, alias=None):
        super().__init__(index=index)
        self.attrs = {"IFLA_IFNAME": name, "IFLA_MTU": mtu, "IFLA_IFALIAS": alias,
                      "IFLA_LINKINFO": FakeLink.Info(kind) if kind else None}

    def get_attr(self, key, default=None):
        value = self.attrs.get(key)
        return default if value is None else value

    class Info:
        def __init__(self, kind):
            self.kind = kind

        def get_attr(self, key):
            return self.kind if key == "IFLA_INFO_KIND" else None


def view(*links, local=(), routes=()):
    """A HostView of ``links``, the host's own addresses ``local`` and its main-table ``routes`` (dst, len, oif)."""
    return HostView({link.get_attr("IFLA_IFNAME"): link for link in links}, set(local), list(routes))
