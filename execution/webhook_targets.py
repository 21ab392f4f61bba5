"""Where webhooks may go: public addresses only, unless WEBHOOK_ALLOWED_HOSTS names the host or its network.

A plan's owner picks its callback_url, so without this check the service would POST, from
inside its own network, to loopback, link-local (cloud metadata at 169.254.169.254) and
private addresses. The host is resolved and checked when the plan is submitted, and again
on every delivery, where the check applies to the address the socket actually connected
to: DNS may answer differently between the two, or between a check and the connection.
"""

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """The webhook's target is not a public address and the allow-list does not name it."""


def _allowed(host: str, address: Address | None) -> bool:
    for entry in settings.WEBHOOK_ALLOWED_HOSTS:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if host.lower().rstrip(".") == entry.rstrip("."):
                return True
            continue
        if address is not None and address in network:
            return True
    return False


def _kind(address: Address) -> str:
    """Return what kind of non-public address this is, or "" for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # IPv6 site-local (fec0::/10) is deprecated, but still routed inside some networks.
    for kind in ("loopback", "link_local", "site_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}", False):
            return kind.replace("_", "-")
    return "" if address.is_global else "non-public"


def address_problem(host: str, address: str) -> str:
    """Return why a webhook may not connect to `address` (which `host` resolved to), or ""."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    kind = _kind(ip)
    if not kind or _allowed(host, ip):
        return ""
    return (
        f"{host} resolves to {ip}, a {kind} address; webhooks go to public addresses only "
        "(WEBHOOK_ALLOWED_HOSTS lists the exceptions)."
    )


def target_problem(url: str) -> str:
    """Return why webhooks may not be sent to `url` (its host resolved now), or "" when they may."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _allowed(host, None):
        return ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        return f"Its host {host!r} does not resolve ({error})."
    for *_, sockaddr in found:
        problem = address_problem(host, str(sockaddr[0]))
        if problem:
            return problem
    return ""


class _GuardedConnection(HTTPConnection):
    """Check the address each new connection reached before anything is sent on it."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        problem = address_problem(self.host, sock.getpeername()[0])
        if problem:
            sock.close()
            raise WebhookRefused(problem)
        return sock


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedPool(HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections refuse addresses the allow-list does not permit."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedPool, "https": _GuardedHTTPSPool}
