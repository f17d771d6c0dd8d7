"""Whether a webhook URL may be called: http(s) only, and never an address inside the network
(SSRF) unless the settings allow-list it.

Checked when an endpoint is registered or changed, and again by the delivery worker before
every POST, since a name may resolve elsewhere by then (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from promptrecord.domain.errors import InvalidInput
from promptrecord.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: inside someone's network
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv6 that reaches an embedded IPv4 address
SCHEMES = ("http", "https")
CODE = "webhook_url_refused"


@dataclass(frozen=True)
class AllowList:
    """Host names, addresses and networks a webhook may reach although internal."""

    hosts: frozenset[str]
    networks: tuple[Network, ...]

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


@lru_cache(maxsize=16)
def allow_list(spec: str) -> AllowList:
    """Parse `PROMPTRECORD_WEBHOOK_ALLOW_HOSTS`: comma-separated names, IPs or CIDRs."""
    hosts: set[str] = set()
    networks: list[Network] = []
    for raw in spec.split(","):
        entry = raw.strip().replace("[", "").replace("]", "").lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.rstrip("."))
    return AllowList(frozenset(hosts), tuple(networks))


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def why_internal(address: IPAddress) -> str | None:
    """What kind of internal address this is, or None when it is a public one."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = why_internal(embedded)
        return None if inner is None else f"{inner} (as {address})"
    for kind, found in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (carrier-grade NAT)", address in SHARED),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if found:
            return kind
    return None if address.is_global else "non-public"


def _refuse(detail: str, field: str) -> InvalidInput:
    return InvalidInput(
        detail,
        field=field,
        code=CODE,
        hint="webhooks may only reach public addresses; an operator can allow internal "
        "hosts with PROMPTRECORD_WEBHOOK_ALLOW_HOSTS",
    )


def _host_and_port(url: str, field: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _refuse(f"url {url!r} is not a valid URL: {error}", field) from None
    if parts.scheme.lower() not in SCHEMES:
        raise _refuse(f"url {url!r} must be an http:// or https:// address", field)
    host = parts.hostname
    if not host:
        raise _refuse(f"url {url!r} names no host", field)
    default = 443 if parts.scheme.lower() == "https" else 80
    return host, port or default


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal address is itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone: fe80::1%eth0
        address = ipaddress.ip_address(text)
        if address not in found:
            found.append(address)
    return found


def checked_addresses(url: str, settings: Settings, field: str = "url") -> list[IPAddress]:
    """The addresses `url` resolves to, each allowed to be called; InvalidInput otherwise.

    The delivery worker may connect to exactly these, so what was checked is what is called.
    """
    host, port = _host_and_port(url, field)
    allowed = allow_list(settings.webhook_allow_hosts)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError, ValueError):
        raise _refuse(
            f"the host {host!r} of url {url!r} does not resolve; check the name", field
        ) from None
    if not addresses:
        raise _refuse(f"the host {host!r} of url {url!r} resolves to no address", field)
    if allowed.allows_host(host):
        return addresses
    for address in addresses:
        kind = why_internal(address)
        if kind is not None and not allowed.allows_address(address):
            what = host if host == str(address) else f"{host} resolves to {address}, which"
            raise _refuse(f"url {url!r} is refused: {what} is a {kind} address", field)
    return addresses


def check_url(url: str, settings: Settings, field: str = "url") -> None:
    """Refuse (InvalidInput `webhook_url_refused`, naming `field`) a URL a webhook may not
    call: not http(s), not resolving, or resolving to any internal address not allow-listed."""
    checked_addresses(url, settings, field)
