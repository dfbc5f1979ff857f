"""The address guard: every connection (the first and each redirect) resolves the host, refuses
loopback, private, link-local (cloud metadata), shared, reserved and multicast addresses, then
connects to the address it checked, so a second DNS answer cannot slip past. IPv6 forms that carry
an IPv4 address are judged by that address (NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, mapped
``::ffff:a.b.c.d``) or refused outright (local NAT64 ``64:ff9b:1::/48``, IPv4-compatible
``::a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, site-local ``fec0::/10``). Only ``http`` and
``https``; no proxies (a proxy would hide the real address)."""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field

from grit_pipeline.fetch.urls import ParsedUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# RFC 6052's well-known NAT64 prefix: on a NAT64 network 64:ff9b::a9fe:a9fe *is* 169.254.169.254.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Python calls these global; each reaches an IPv4 or site-local host somewhere, none a web server.
_REFUSED_IPV6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): the IPv4 inside sits where the operator chose
        "::/96",  # IPv4-compatible (deprecated), ::a.b.c.d
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT), ::ffff:0:a.b.c.d
        "fec0::/10",  # site-local (deprecated, still routed inside some networks)
    )
)


class PrivateAddressError(OSError):
    """The host resolved to an address the guard refuses."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a mapped, NAT64 or 6to4 IPv6 address leads to, else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses, IPv6 carrying IPv4 judged by the IPv4 inside."""
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _REFUSED_IPV6):
            return False
        ip = embedded_ipv4(ip) or ip
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses a download may connect to."""

    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()

    @functools.cached_property
    def _networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(network) for network in self.allowed_networks)

    def allows(self, ip: IPAddress) -> bool:
        if self.allow_private or is_public_address(ip):
            return True
        return any(ip in network for network in self._networks)


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


@dataclass(frozen=True)
class Opener:
    """Opens guarded connections: the address policy, and one TLS context for every https host."""

    policy: AddressPolicy = AddressPolicy()
    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context, repr=False)

    def connect(self, url: ParsedUrl, timeout_s: float) -> http.client.HTTPConnection:
        """A connected ``HTTPConnection`` to ``url.host`` (the very host the guard checked)."""
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(url.host, url.port, timeout=timeout_s, context=self.tls)
        else:
            connection = http.client.HTTPConnection(url.host, url.port, timeout=timeout_s)
        connection._create_connection = functools.partial(guarded_create_connection, policy=self.policy)
        try:
            connection.connect()
        except BaseException:
            connection.close()
            raise
        return connection


def build_opener(policy: AddressPolicy = AddressPolicy()) -> Opener:
    """An opener whose every connection, redirects included, is behind the address guard."""
    return Opener(policy)
