"""Outbound HTTP to destinations users choose (alert webhooks): public
addresses only, so an organisation's admin cannot make the server reach into
the operator's network, this machine or a cloud metadata service (server-side
request forgery).

- The URL is parsed strictly: ``http`` or ``https``, no credentials, a host that
  is a DNS name or an IP address. Numeric spellings of IPv4 addresses
  (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``0``) are read the
  way the resolver reads them (``inet_aton``) and checked as the address they
  mean.
- Every address the host resolves to must be public: not loopback, private,
  link-local, unique-local, shared (carrier-grade NAT), multicast, unspecified,
  reserved or documentation, nor a cloud metadata address (169.254.169.254,
  fd00:ec2::254, …). IPv4 carried in IPv6 (IPv4-mapped, NAT64, 6to4, Teredo) is
  checked as IPv4. Names of metadata services and ``localhost`` are refused
  without asking DNS.
- The connection goes to exactly an address that was checked — resolution
  happens once, so DNS rebinding cannot swap it — while the Host header and the
  TLS server name (and certificate check) are the URL's host.
- Redirects are not followed.

``OUTBOUND_ALLOWED_NETWORKS`` (CIDRs) lets a self-hosted installation reach
receivers on its own network; metadata addresses stay refused even there.

Why not a library: the one dedicated to this for ``requests`` (advocate) is
unmaintained since 2020 and predates urllib3 2; the check needs ``ipaddress``,
``socket.getaddrinfo`` and ``http.client`` with a connected socket handed in.
"""

import http.client
import ipaddress
import re
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata and similar services; refused even inside an allowed network.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, …
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
HOST_NAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
DEFAULT_PORTS = {"http": 80, "https": 443}
# Saving a URL waits this long for DNS (getaddrinfo has no timeout of its own).
SAVE_RESOLVE_SECONDS = 2.0
_save_lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="outbound-dns")


class OutboundRefused(ValueError):
    """This server does not send requests there."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # a lower-case DNS name, or an IP address in canonical form
    port: int
    target: str  # path and query, as sent in the request line
    address: Address | None  # set when the host is an IP address


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.OUTBOUND_ALLOWED_NETWORKS]


def _as_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 address carries, if any; else the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in prefix for prefix in NAT64_PREFIXES):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    return address


def address_refusal(address: Address) -> str | None:
    """Why the server must not connect to ``address``, or None when it may."""
    address = ipaddress.ip_address(str(address).split("%", 1)[0])  # no scope id
    effective = _as_ipv4(address)
    if address in METADATA_ADDRESSES or effective in METADATA_ADDRESSES:
        return f"{effective} is a cloud metadata address"
    if any(effective in network for network in _allowed_networks()):
        return None
    checks = (
        (effective.is_loopback, "a loopback address"),
        (effective.is_unspecified, "an unspecified address"),
        (effective.is_link_local, "a link-local address"),
        (effective.is_multicast, "a multicast address"),
        (effective in ipaddress.ip_network("fc00::/7"), "a unique-local address"),
        (effective.is_private, "a private address"),
        (effective.is_reserved, "a reserved address"),
        (not effective.is_global, "not a public address"),
    )
    for refused, what in checks:
        if refused:
            return f"{effective} is {what}"
    return None


def _refuse_address(address: Address) -> None:
    reason = address_refusal(address)
    if reason and "metadata" in reason:
        raise OutboundRefused(reason)
    if reason:
        raise OutboundRefused(
            f"{reason}; this server sends only to public addresses (OUTBOUND_ALLOWED_NETWORKS lists exceptions)"
        )


def _host_address(host: str) -> Address | None:
    """The IP address ``host`` spells, in any form the resolver accepts, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))  # 127.1, 0x7f000001, 2130706433, 0177.0.0.1
        except OSError:
            return None
    return None


def destination(url: str) -> Destination:
    """Parse ``url`` strictly and check everything that needs no DNS."""
    if any(c in url for c in "\x00\r\n\t \\"):
        raise OutboundRefused("the URL contains whitespace, a backslash or a control character")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise OutboundRefused("only http and https URLs are sent to")
    if "@" in parts.netloc:
        raise OutboundRefused("a URL with credentials (user@host) is not accepted")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise OutboundRefused("the URL's port is not a number from 1 to 65535") from None
    raw = parts.hostname or ""
    if parts.netloc.startswith("["):
        try:
            address = ipaddress.IPv6Address(raw)
        except ValueError:
            raise OutboundRefused("the URL's host is not a valid IPv6 address") from None
        if address.scope_id:
            raise OutboundRefused("a scoped IPv6 address is not accepted")
        host = str(address)
    else:
        host = raw[:-1] if raw.endswith(".") else raw  # the root's dot: "localhost." is localhost
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise OutboundRefused("the URL's host is not a valid name") from None
        address = _host_address(host)
        if address is not None:
            host = str(address)
        elif len(host) > 253 or not HOST_NAME.fullmatch(host):
            raise OutboundRefused("the URL's host is not a valid name")
        elif host == "localhost" or host.endswith(".localhost") or host == "localhost.localdomain":
            raise OutboundRefused(f"{host} is this machine; this server sends only to public addresses")
        elif host in METADATA_NAMES:
            raise OutboundRefused(f"{host} is a cloud metadata service")
    if address is not None:
        _refuse_address(address)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(scheme=scheme, host=host, port=port, target=target, address=address)


def resolve(dest: Destination) -> list[Address]:
    """The addresses to connect to, all checked; any refused one refuses them all
    (a name answering with a public and a private address is not trusted)."""
    if dest.address is not None:
        return [dest.address]
    found: list[Address] = []
    for *_, sockaddr in socket.getaddrinfo(dest.host, dest.port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    for address in found:
        _refuse_address(address)
    return found


def url_check(url: str) -> None:
    """Refuse ``url`` (OutboundRefused) when it is not a public destination: used
    when a URL is saved. A name that does not resolve now, or not within
    SAVE_RESOLVE_SECONDS, passes — DNS may be down — and is checked again when a
    request is sent."""
    dest = destination(url)
    if dest.address is not None:
        return  # checked by destination()
    try:
        _save_lookups.submit(resolve, dest).result(timeout=SAVE_RESOLVE_SECONDS)
    except (socket.gaierror, TimeoutError):
        pass


def _connect(dest: Destination, timeout: float) -> socket.socket:
    error: OSError | None = None
    for address in resolve(dest):
        try:
            return socket.create_connection((str(address), dest.port), timeout=timeout)
        except OSError as exc:
            error = exc
    raise error or OSError(f"{dest.host} has no address")


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> int:
    """POST ``body`` to ``url`` over a connection to a checked address; the
    answer's status (redirects are not followed). Raises OutboundRefused, or
    OSError / http.client.HTTPException when the receiver cannot be reached."""
    dest = destination(url)
    sock = _connect(dest, timeout)
    try:
        if dest.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=dest.host)
            connection = http.client.HTTPSConnection(dest.host, dest.port, timeout=timeout)
        else:
            connection = http.client.HTTPConnection(dest.host, dest.port, timeout=timeout)
        connection.sock = sock  # connected already: http.client does not resolve the name again
        connection.request("POST", dest.target, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        sock.close()
