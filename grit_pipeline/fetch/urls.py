"""URL text -> ``ParsedUrl`` (scheme, ASCII host, port, request target), or ``invalid_url``.

One parser for every URL the fetch stage meets (the input's and each redirect's), so the address
guard, the connection, the ``Host`` header and the per-host limits all see the same host. Strict
where a lenient reading would let one URL mean two things:

- control characters (CR, LF, NUL, ...) anywhere are refused, not stripped as ``urlsplit`` does;
- user info (``user:password@``) is parsed off and never sent: the host is what follows the ``@``;
- hosts: ASCII letters, digits, ``-``, ``_`` and dots, or IDNA 2008 names (encoded to ``xn--``),
  or a bracketed IPv6 address; no percent-escapes, no full-width or other look-alike characters;
- ports: ASCII digits, 1 to 65535 (a larger one would wrap to another port in some clients);
- path and query: spaces and non-ASCII characters are percent-encoded, as browsers send them.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

import idna

from grit_pipeline.fetch.results import FetchError

DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ASCII_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
# Characters kept as they are in a path or query: RFC 3986's sub-delims, ":" and "@", and "%" so
# that escapes already present are not escaped twice.
_PATH_SAFE = "/!$&'()*+,;=:@%~"
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass(frozen=True)
class ParsedUrl:
    """An http(s) URL as it is requested: ``host`` is ASCII (IPv6 without brackets)."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, percent-encoded; the fragment is never sent

    @property
    def authority(self) -> str:
        """The ``Host`` header: brackets around IPv6, the port when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def text(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


def _invalid(url, why: str) -> FetchError:
    return FetchError("invalid_url", f"{why}: {url!r}")


def parse_url(url) -> ParsedUrl:
    """The ``ParsedUrl`` of ``url``; raises ``FetchError("invalid_url")`` for anything malformed."""
    if not isinstance(url, str):
        raise _invalid(url, f"expected an http(s) URL as text, got {type(url).__name__}")
    url = url.strip(" ")
    if _CONTROL.search(url):
        raise _invalid(url, "control characters (CR, LF, NUL, ...) in the URL")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as err:  # e.g. an unbalanced bracket
        raise _invalid(url, str(err)) from err
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _invalid(url, "expected an http:// or https:// URL")
    host, port = _split_host_port(url, parts.netloc.rpartition("@")[2])
    return ParsedUrl(scheme, host, port or DEFAULT_PORTS[scheme], _target(parts))


def _split_host_port(url: str, hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        inside, bracket, port = hostport[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise _invalid(url, "unbalanced brackets around the host")
        return _ipv6_host(url, inside), _port(url, port[1:])
    host, _, port = hostport.partition(":")
    return _name_host(url, host), _port(url, port)


def _ipv6_host(url: str, text: str) -> str:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError as err:
        raise _invalid(url, f"expected an IPv6 address in brackets, got {text!r}") from err
    if address.scope_id:  # a zone ("%eth0") names an interface of this machine, not a web host
        raise _invalid(url, f"IPv6 zone {address.scope_id!r} in a URL")
    return address.compressed


def _name_host(url: str, host: str) -> str:
    if not host:
        raise _invalid(url, "no host")
    host = host.lower()
    if host.isascii():
        if not _ASCII_HOST.fullmatch(host) or len(host) > 253:
            raise _invalid(url, f"host {host!r} is not a valid host name")
        return host
    try:
        # Strict IDNA 2008, no UTS 46 mapping: full-width digits and other look-alikes are refused
        # rather than mapped to the ASCII they resemble.
        return idna.encode(host.rstrip("."), uts46=False).decode("ascii")
    except idna.IDNAError as err:
        raise _invalid(url, f"host {host!r} is not a valid internationalised name ({err})") from err


def _port(url: str, text: str) -> int | None:
    if not text:
        return None  # "http://host:/" means the default port
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise _invalid(url, f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _target(parts: urllib.parse.SplitResult) -> str:
    path = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    if not path.startswith("/"):
        path = "/" + path
    return f"{path}?{urllib.parse.quote(parts.query, safe=_QUERY_SAFE)}" if parts.query else path


def resolve_redirect(base: ParsedUrl, location: str) -> ParsedUrl:
    """The URL a ``Location`` header points at, relative to ``base``; ``bad_redirect`` if malformed."""
    try:
        return parse_url(urllib.parse.urljoin(base.text, location))
    except FetchError as err:
        raise FetchError("bad_redirect", f"redirect to an unusable URL: {err.failure.error}") from err
