"""The address guard: every connection (the first and each redirect) resolves the host, refuses
loopback, private, link-local (cloud metadata), shared, reserved and multicast addresses, then
connects to the address it checked, so a second DNS answer cannot slip past. Only ``http``/``https``,
no proxies from the environment (a proxy would hide the real address)."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from dataclasses import dataclass


class PrivateAddressError(OSError):
    """The host resolved to an address the guard refuses."""


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for globally routable unicast addresses (IPv4-mapped IPv6 judged by the IPv4 inside)."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses a download may connect to."""

    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.allow_private or is_public_address(ip):
            return True
        return any(ip in ipaddress.ip_network(network) for network in self.allowed_networks)


def guarded_create_connection(address, timeout=None, source_address=None, *, policy: AddressPolicy):
    """``socket.create_connection`` that refuses non-public addresses, checked after DNS resolution.

    Every address the name resolves to is checked before connecting (a name that resolves to a
    mix is refused), and the socket connects to the checked address itself.
    """
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if not policy.allows(ip):
            raise PrivateAddressError(f"{host} resolves to {ip}, which is not a public address")
    last_error: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            last_error = err
            sock.close()
    raise last_error or OSError(f"cannot resolve {host}")


def _guarded(connection_class, policy: AddressPolicy):
    def make(host, **kwargs):
        connection = connection_class(host, **kwargs)
        connection._create_connection = lambda *a, **k: guarded_create_connection(*a, **k, policy=policy)
        return connection

    return make


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self._factory = _guarded(http.client.HTTPConnection, policy)

    def http_open(self, req):
        return self.do_open(self._factory, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self._factory = _guarded(http.client.HTTPSConnection, policy)

    def https_open(self, req):
        return self.do_open(self._factory, req, context=self._context)


def build_opener(policy: AddressPolicy = AddressPolicy()) -> urllib.request.OpenerDirector:
    """An opener for http/https only, every connection (redirects included) behind the address guard."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        _GuardedHTTPHandler(policy),
        _GuardedHTTPSHandler(policy),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),  # ftp:, file:, data: ... -> "unknown url type"
    ):
        opener.add_handler(handler)
    return opener
