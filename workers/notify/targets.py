"""Which network addresses a webhook may reach: no SSRF.

Private, loopback, link-local (cloud metadata at 169.254.169.254), multicast, reserved and
unspecified addresses are refused unless the settings allow them. Every form of an IPv4
literal the C resolver accepts (`0x7f000001`, `2130706433`, `0177.0.0.1`, `127.1`) is
resolved to the address it means before the check, DNS names are resolved and *all*
their addresses checked, and the connection is then made to the checked address, so a
second DNS answer cannot swap in another target.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if self.allow_private or any(address in net for net in self.allowed_networks):
            return True
        return address.is_global and not address.is_multicast


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
        raise TargetRefused(f"webhook host {host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [str(a) for a in addresses if not policy.permits(a)]
    if refused or not addresses:
        raise TargetRefused(
            f"webhook target {host} resolves to a private or reserved address "
            f"({', '.join(refused) or 'none'}); refused to prevent SSRF"
        )
    return Target(scheme, host, port, path, str(addresses[0]))
