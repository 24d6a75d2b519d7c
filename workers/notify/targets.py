"""Which network addresses a webhook may reach: no SSRF.

Private, loopback, link-local (cloud metadata at 169.254.169.254), site-local, multicast,
reserved, documentation and unspecified addresses are refused unless the settings allow
them. The decision is an explicit deny list, not `ipaddress.is_global` alone: what
`is_global` answers changes between Python releases (6to4, NAT64 and `fec0::/10` count as
global in 3.11). An IPv6 address that carries an IPv4 address (IPv4-mapped, -compatible
and -translated, NAT64, 6to4, Teredo) is judged by the IPv4 addresses it carries, because
a translator or relay on the path delivers it there.

Every form of an IPv4 literal the C resolver accepts (`0x7f000001`, `2130706433`,
`0177.0.0.1`, `127.1`) is resolved to the address it means before the check, DNS names
are resolved and *all* their addresses checked, and the connection is then made to the
checked address, so a second DNS answer cannot swap in another target.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


DENIED_V4 = _networks(
    "0.0.0.0/8",  # "this network": Linux connects 0.0.0.0 to the host itself
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)  # fmt: skip
DENIED_V6 = _networks(
    "::/128", "::1/128",  # unspecified, loopback
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments (Teredo, inside it, is decoded instead)
    "2001:db8::/32", "3fff::/20",  # documentation
    "5f00::/16",  # SRv6 segment identifiers
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local: deprecated, but stacks still route it locally
    "ff00::/8",  # multicast
)  # fmt: skip


def _bits(value: int, start: int, length: int) -> int:
    """`length` bits of a 128-bit address starting at bit `start` (0 = most significant)."""
    return (value >> (128 - start - length)) & ((1 << length) - 1)


def _v4(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value & 0xFFFFFFFF)


def _rfc6052(value: int) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 address under each prefix length a local-use NAT64 prefix (64:ff9b:1::/48)
    may be deployed with (RFC 6052 2.2: bits 64-71 are skipped). All are checked, since
    the length in use is a property of the network, not of the address; so most of the
    prefix is refused, which suits a range meant for a local translator."""
    return (
        _v4(_bits(value, 48, 16) << 16 | _bits(value, 72, 16)),  # /48
        _v4(_bits(value, 56, 8) << 24 | _bits(value, 72, 24)),  # /56
        _v4(_bits(value, 72, 32)),  # /64
        _v4(value),  # /96
    )


# (prefix, the IPv4 addresses an address in it carries). The prefixes do not overlap.
EMBEDDINGS: tuple[tuple[Network, Callable[[int], tuple[ipaddress.IPv4Address, ...]]], ...] = (
    (ipaddress.ip_network("::ffff:0:0/96"), lambda v: (_v4(v),)),  # IPv4-mapped
    (ipaddress.ip_network("::ffff:0:0:0/96"), lambda v: (_v4(v),)),  # IPv4-translated
    (ipaddress.ip_network("::/96"), lambda v: (_v4(v),)),  # IPv4-compatible (deprecated)
    (ipaddress.ip_network("64:ff9b::/96"), lambda v: (_v4(v),)),  # NAT64 well-known
    (ipaddress.ip_network("64:ff9b:1::/48"), _rfc6052),  # NAT64 local use
    (ipaddress.ip_network("2002::/16"), lambda v: (_v4(_bits(v, 16, 32)),)),  # 6to4
    # Teredo: the server, and the client (stored inverted, "obfuscated").
    (ipaddress.ip_network("2001::/32"), lambda v: (_v4(_bits(v, 32, 32)), _v4(~v))),
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (none for a plain IPv6 address)."""
    for prefix, extract in EMBEDDINGS:
        if address in prefix:
            return extract(int(address))
    return ()


def public_ipv4(address: ipaddress.IPv4Address) -> bool:
    return address.is_global and not any(address in net for net in DENIED_V4)


def public_ipv6(address: ipaddress.IPv6Address) -> bool:
    """A plain (not IPv4-carrying) IPv6 address outside every denied range."""
    return address.is_global and not any(address in net for net in DENIED_V6)


class TargetRefused(Exception):
    """The URL is not an acceptable webhook target."""


@dataclass(frozen=True)
class TargetPolicy:
    allow_private: bool = False
    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, allow_private: bool, networks: str) -> TargetPolicy:
        nets = tuple(
            ipaddress.ip_network(n.strip(), strict=False) for n in networks.split(",") if n.strip()
        )
        return cls(allow_private, nets)

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in net for net in self.allowed_networks)

    def permits(self, address: IPAddress) -> bool:
        if self.allow_private or self._allowed(address):
            return True
        if isinstance(address, ipaddress.IPv4Address):
            return public_ipv4(address)
        carried = embedded_ipv4(address)
        if carried:
            return all(self._allowed(v4) or public_ipv4(v4) for v4 in carried)
        return public_ipv6(address)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP to connect to


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path+query) of an http(s) URL; TargetRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("webhook URL must be http:// or https://")
    if not parts.hostname:
        raise TargetRefused("webhook URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("webhook URL must not carry credentials")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def literal_address(host: str) -> IPAddress | None:
    """The address an IP literal in any accepted form denotes; None for a DNS name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton accepts the legacy forms (hex, octal, decimal, short) browsers do too.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_literal(url: str, policy: TargetPolicy) -> None:
    """Without DNS: refuse a malformed URL or a literal address the policy forbids."""
    _, host, _, _ = split_url(url)
    address = literal_address(host)
    if address is not None and not policy.permits(address):
        raise TargetRefused(f"webhook target {host} is a private or reserved address")


def resolve(url: str, policy: TargetPolicy) -> Target:
    """Resolve the URL's host and check every address; the first is the one to use."""
    scheme, host, port, path = split_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        logger.debug("webhook target %s refused: does not resolve: %s", host, exc)
        raise TargetRefused(_unreachable(host)) from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [str(a) for a in addresses if not policy.permits(a)]
    if refused or not addresses:
        # The addresses stay out of the error: it is stored with the task and shown to its
        # owner, and would map the internal network name by name.
        logger.debug("webhook target %s refused: resolves to %s", host, refused or "nothing")
        raise TargetRefused(_unreachable(host))
    return Target(scheme, host, port, path, str(addresses[0]))


def _unreachable(host: str) -> str:
    # One message whether the name does not resolve or resolves to a private address:
    # two would let a user probe which internal names exist.
    return (
        f"webhook target {host} does not resolve to a public address (it does not resolve, "
        "or resolves to a private or reserved one); refused to prevent SSRF"
    )
