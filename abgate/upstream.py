"""Strict schema of a variant version's ``upstream`` object, sans-I/O.

Shape (CONTRACT.md, "upstream")::

    {"internal_id": str, "base_url": str,
     "api_kind": "chat_completions" | "responses" | "messages",
     "extra_body"?: object, "remove_from_body"?: [str], "timeout_s"?: number}

:func:`parse_upstream` is the only validated way to build an :class:`Upstream`;
:meth:`Upstream.to_json` gives the canonical stored form (every field present,
``base_url`` normalised), and ``parse_upstream(u.to_json(), ...) == u``.

Address policy
--------------
``base_url`` is checked without DNS (this module does no I/O):

* always refused: link-local (169.254.0.0/16, fe80::/10), cloud metadata
  addresses and names (169.254.169.254, fd00:ec2::254, 100.100.100.200,
  168.63.129.16, 192.0.0.192, ``metadata.google.internal``, ...), multicast
  and reserved (240.0.0.0/4) addresses;
* refused unless ``allow_insecure``: ``http://``, loopback (127/8, ::1,
  ``localhost``, ``*.localhost``), unspecified (0.0.0.0/8, ::), private
  (10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10), shared/CGNAT
  (100.64/10) and other special-purpose ranges.

Literal IPs are recognised in every form a resolver or URL parser accepts:
decimal (``2852039166``), hex (``0xA9FEA9FE``), octal, short dotted forms
(``169.254.43518``), IPv4-mapped/compatible/translated IPv6, NAT64
(64:ff9b::/96, 64:ff9b:1::/48), 6to4 and Teredo. A numeric host in any form
other than plain dotted decimal is refused outright.

A host *name* can still resolve to a forbidden address (DNS rebinding,
``*.nip.io``...). The proxy must therefore check every resolved address with
:func:`is_forbidden_address` before connecting (and connect to that checked
address), using the same ``allow_insecure`` setting.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

__all__ = [
    "API_KINDS",
    "DEFAULT_TIMEOUT_S",
    "ENDPOINT_PATHS",
    "EXTRA_BODY_RESERVED_KEYS",
    "MAX_TIMEOUT_S",
    "REMOVE_PROTECTED_KEYS",
    "ApiKind",
    "Upstream",
    "UpstreamError",
    "forbidden_address_reason",
    "is_forbidden_address",
    "parse_upstream",
]

ApiKind = Literal["chat_completions", "responses", "messages"]
API_KINDS: tuple[ApiKind, ...] = ("chat_completions", "responses", "messages")
ENDPOINT_PATHS: dict[str, str] = {
    "chat_completions": "/chat/completions",
    "responses": "/responses",
    "messages": "/messages",
}

DEFAULT_TIMEOUT_S = 600.0
MAX_TIMEOUT_S = 3600.0
MAX_INTERNAL_ID_CHARS = 200
MAX_BASE_URL_CHARS = 2048
MAX_REMOVE_FROM_BODY = 64
MAX_BODY_KEY_CHARS = 256
MAX_EXTRA_BODY_BYTES = 64 * 1024
MAX_EXTRA_BODY_DEPTH = 32

#: Top-level request keys the proxy owns; ``extra_body`` may not set them.
EXTRA_BODY_RESERVED_KEYS: frozenset[str] = frozenset(
    {"model", "stream", "messages", "input", "user", "safety_identifier"}
)
#: Top-level request keys ``remove_from_body`` may not drop.
REMOVE_PROTECTED_KEYS: frozenset[str] = frozenset({"model", "messages", "input", "stream"})
# extra_body top-level keys that look like credentials (compared lowercased,
# without '_' and '-'). Keys belong in the encrypted api_key, never in upstream.
_CREDENTIAL_KEYS = frozenset(
    {
        "apikey",
        "xapikey",
        "authorization",
        "auth",
        "password",
        "secret",
        "clientsecret",
        "accesstoken",
        "bearertoken",
        "token",
        "privatekey",
    }
)

_ALLOWED_FIELDS = (
    "internal_id",
    "base_url",
    "api_kind",
    "extra_body",
    "remove_from_body",
    "timeout_s",
)
_REQUIRED_FIELDS = ("internal_id", "base_url", "api_kind")

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1  # orjson serialises 64-bit integers only


class UpstreamError(ValueError):
    """An ``upstream`` object is invalid. ``field`` names the offending field,
    e.g. ``upstream.base_url``; the message starts with it. Messages never echo
    a ``base_url`` (it could carry credentials) or ``extra_body`` values."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# --------------------------------------------------------------------------
# Address classification
# --------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

_V4_METADATA = frozenset(
    int(ipaddress.IPv4Address(a))
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
_V6_METADATA = frozenset(
    int(ipaddress.IPv6Address(a))
    for a in ("fd00:ec2::254",)  # AWS IMDS over IPv6
)

# (network, reason, always) - ``always`` means refused even with allow_insecure.
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str, bool], ...] = (
    (_V4("169.254.0.0/16"), "link-local", True),
    (_V4("224.0.0.0/4"), "multicast", True),
    (_V4("240.0.0.0/4"), "reserved", True),
    (_V4("0.0.0.0/8"), "unspecified", False),
    (_V4("127.0.0.0/8"), "loopback", False),
    (_V4("10.0.0.0/8"), "private", False),
    (_V4("172.16.0.0/12"), "private", False),
    (_V4("192.168.0.0/16"), "private", False),
    (_V4("100.64.0.0/10"), "shared (CGNAT)", False),
    (_V4("192.0.0.0/24"), "special-purpose", False),
    (_V4("198.18.0.0/15"), "special-purpose", False),
    (_V4("192.0.2.0/24"), "documentation", False),
    (_V4("198.51.100.0/24"), "documentation", False),
    (_V4("203.0.113.0/24"), "documentation", False),
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str, bool], ...] = (
    (_V6("fe80::/10"), "link-local", True),
    (_V6("ff00::/8"), "multicast", True),
    (_V6("::/128"), "unspecified", False),
    (_V6("::1/128"), "loopback", False),
    (_V6("fc00::/7"), "private", False),
    (_V6("fec0::/10"), "private", False),
    (_V6("100::/64"), "special-purpose", False),
    (_V6("2001:db8::/32"), "documentation", False),
)

_NAT64_WKP = _V6("64:ff9b::/96")
_NAT64_LOCAL = _V6("64:ff9b:1::/48")
_V4_COMPAT = _V6("::/96")
_V4_TRANSLATED = _V6("::ffff:0:0:0/96")


def _rfc6052_extract(packed: bytes, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address embedded after an RFC 6052 prefix (bits 64-71 skipped)."""
    if prefix_len == 96:
        raw = packed[12:16]
    else:
        start = prefix_len // 8
        raw = (packed[start:8] + packed[9:])[:4]
    return ipaddress.IPv4Address(raw)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    """IPv4 addresses an IPv6 address can route or translate to."""
    found: list[tuple[ipaddress.IPv4Address, str]] = []
    n = int(ip)
    low32 = ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        found.append((ip.ipv4_mapped, "IPv4-mapped"))
    elif n > 1 and ip in _V4_COMPAT:
        found.append((low32, "IPv4-compatible"))
    elif ip in _V4_TRANSLATED:
        found.append((low32, "IPv4-translated"))
    if ip in _NAT64_WKP:
        found.append((low32, "NAT64"))
    elif ip in _NAT64_LOCAL:
        packed = ip.packed
        for plen in (48, 56, 64, 96):
            found.append((_rfc6052_extract(packed, plen), "NAT64"))
    if ip.sixtofour is not None:
        found.append((ip.sixtofour, "6to4"))
    if ip.teredo is not None:
        server, client = ip.teredo
        found.append((server, "Teredo"))
        found.append((client, "Teredo"))
    return found


def _classify_v4(ip: ipaddress.IPv4Address) -> tuple[str, bool] | None:
    n = int(ip)
    if n in _V4_METADATA:
        return "cloud metadata", True
    for net, reason, always in _V4_RULES:
        if ip in net:
            return reason, always
    return None


def _classify(ip: IPAddress) -> tuple[str, bool] | None:
    """``(reason, always)`` for a non-public address, else None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _classify_v4(ip)
    n = int(ip)
    if n in _V6_METADATA:
        return "cloud metadata", True
    own: tuple[str, bool] | None = None
    for net, reason, always in _V6_RULES:
        if ip in net:
            own = (reason, always)
            break
    if own is not None and own[1]:
        return own
    for v4, how in _embedded_ipv4(ip):
        inner = _classify_v4(v4)
        if inner is None:
            continue
        reason = f"{inner[0]} ({how} {v4})"
        if inner[1]:
            return reason, True
        if own is None:
            own = (reason, False)
    return own


def forbidden_address_reason(ip: IPAddress, *, allow_insecure: bool) -> str | None:
    """Why connecting to ``ip`` is refused (e.g. ``"link-local"``), or None.

    Call it on every address a host name resolves to, before connecting.
    """
    found = _classify(ip)
    if found is None:
        return None
    reason, always = found
    if always or not allow_insecure:
        return reason
    return None


def is_forbidden_address(ip: IPAddress, *, allow_insecure: bool) -> bool:
    """True when the proxy must not connect to ``ip``.

    Link-local, metadata, multicast and reserved addresses are always
    forbidden; loopback, private, unspecified, CGNAT and other special-purpose
    addresses unless ``allow_insecure``. IPv4 embedded in IPv6 (mapped,
    NAT64, 6to4, Teredo...) is judged like the IPv4 address itself.
    """
    return forbidden_address_reason(ip, allow_insecure=allow_insecure) is not None


# --------------------------------------------------------------------------
# Host names and base_url
# --------------------------------------------------------------------------

_METADATA_NAMES = (
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
    "metadata.packet.net",
)
_LOOPBACK_NAMES = (
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
)

_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_IPV4_PART_RE = re.compile(r"0[xX][0-9A-Fa-f]*|[0-9]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_PATH_RE = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

_BASE = "upstream.base_url"


class _NotIPv4(Exception):
    pass


def _ipv4_number(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        return int(digits, 16) if digits else 0
    if len(part) > 1 and part[0] == "0":
        if not all(c in "01234567" for c in part):
            raise _NotIPv4
        return int(part, 8)
    return int(part, 10)


def _loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse a host the way inet_aton / the WHATWG URL parser do.

    Returns None when the host is a name (its last label is not numeric);
    raises _NotIPv4 when it looks numeric but is not a valid address.
    """
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    if not labels or not _IPV4_PART_RE.fullmatch(labels[-1]):
        return None
    if len(labels) > 4 or not all(_IPV4_PART_RE.fullmatch(p) for p in labels):
        raise _NotIPv4
    if any(len(p) > 40 for p in labels):
        raise _NotIPv4
    numbers = [_ipv4_number(p) for p in labels]
    if any(x > 255 for x in numbers[:-1]):
        raise _NotIPv4
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        raise _NotIPv4
    value = numbers[-1]
    for i, x in enumerate(numbers[:-1]):
        value += x << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _name_matches(host: str, names: tuple[str, ...]) -> bool:
    return any(host == n or host.endswith("." + n) for n in names)


def _fail(problem: str) -> UpstreamError:
    return UpstreamError(_BASE, problem)


def _insecure_hint(what: str) -> str:
    return f"{what} is not allowed unless ABGATE_ALLOW_INSECURE_UPSTREAM is set"


def _parse_host(host: str) -> tuple[str, str | None]:
    """Validate a host; returns (canonical host, why it needs allow_insecure or None)."""
    if not host:
        raise _fail("must name a host")
    if host.startswith("["):
        if not host.endswith("]"):
            raise _fail("has an unterminated IPv6 address")
        inner = host[1:-1]
        if "%" in inner:
            raise _fail("must not contain an IPv6 zone id")
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise _fail("has an invalid IPv6 address") from None
        found = _classify(ip6)
        if found is not None and found[1]:
            raise _fail(f"host is a {found[0]} address and is never allowed")
        return f"[{ip6.compressed}]", found[0] if found else None
    host = host.lower()
    try:
        ip4 = _loose_ipv4(host)
    except _NotIPv4:
        raise _fail("has a numeric host that is not a valid IPv4 address") from None
    if ip4 is not None:
        found = _classify_v4(ip4)
        if found is not None and found[1]:
            raise _fail(f"host is a {found[0]} address and is never allowed")
        if host != str(ip4):
            raise _fail("IPv4 host must be written in plain dotted-decimal form (a.b.c.d)")
        return host, found[0] if found else None
    bare = host[:-1] if host.endswith(".") else host
    if len(bare) > 253 or not all(_LABEL_RE.fullmatch(label) for label in bare.split(".")):
        raise _fail("has an invalid host name")
    if _name_matches(bare, _METADATA_NAMES):
        raise _fail("host is a cloud metadata name and is never allowed")
    return host, "loopback" if _name_matches(bare, _LOOPBACK_NAMES) else None


def _parse_base_url(value: object, allow_insecure: bool) -> str:
    if not isinstance(value, str):
        raise _fail("must be a string")
    if not value:
        raise _fail("must not be empty")
    if len(value) > MAX_BASE_URL_CHARS:
        raise _fail(f"must be at most {MAX_BASE_URL_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in value):
        raise _fail("must not contain whitespace, control or non-ASCII characters")
    if "\\" in value:
        raise _fail("must not contain a backslash")
    if "?" in value:
        raise _fail("must not contain a query string")
    if "#" in value:
        raise _fail("must not contain a fragment")
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise _fail("must be an absolute http:// or https:// URL")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise _fail("is not a valid URL") from None
    netloc, slash, _ = rest.partition("/")
    path = slash + rest[len(netloc) + 1 :] if slash else ""
    if parts.netloc != netloc or parts.path != path:  # pragma: no cover - defensive
        raise _fail("is not a valid URL")
    if "@" in netloc:
        raise _fail("must not contain credentials (user:password@); use api_key")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise _fail("has an unterminated IPv6 address")
        host, port_text = netloc[: end + 1], netloc[end + 1 :]
        if port_text and not port_text.startswith(":"):
            raise _fail("is not a valid URL")
        has_port, port_text = bool(port_text), port_text[1:]
    else:
        if netloc.count(":") > 1:
            raise _fail("IPv6 hosts must be written in brackets")
        host, colon, port_text = netloc.partition(":")
        has_port = bool(colon)
    port: int | None = None
    if has_port:
        if not _PORT_RE.fullmatch(port_text) or not 0 < int(port_text) <= 65535:
            raise _fail("has an invalid port")
        port = int(port_text)
    canonical_host, insecure_reason = _parse_host(host)
    if not _PATH_RE.fullmatch(path) or _BAD_PERCENT_RE.search(path):
        raise _fail("has characters not allowed in a URL path")
    segments = path.split("/")
    if any(unquote(s) in (".", "..") for s in segments):
        raise _fail("must not contain '.' or '..' path segments")
    path = path.rstrip("/")
    lowered = path.lower()
    for suffix in ENDPOINT_PATHS.values():
        if lowered.endswith(suffix):
            raise _fail(
                f"must not end with the endpoint path {suffix!r}; it is appended from api_kind"
            )
    if scheme != "https" and not allow_insecure:
        raise _fail(_insecure_hint("http://"))
    if insecure_reason and not allow_insecure:
        raise _fail(_insecure_hint(f"a {insecure_reason} host"))
    default_port = 443 if scheme == "https" else 80
    port_part = f":{port}" if port is not None and port != default_port else ""
    return f"{scheme}://{canonical_host}{port_part}{path}"


# --------------------------------------------------------------------------
# Other fields
# --------------------------------------------------------------------------


def _bad_text(text: str) -> str | None:
    """Problem with a string that must survive Postgres jsonb and orjson."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode"
    return None


def _parse_internal_id(value: object) -> str:
    name = "upstream.internal_id"
    if not isinstance(value, str):
        raise UpstreamError(name, "must be a string")
    if not value:
        raise UpstreamError(name, "must not be empty")
    if len(value) > MAX_INTERNAL_ID_CHARS:
        raise UpstreamError(name, f"must be at most {MAX_INTERNAL_ID_CHARS} characters")
    if _bad_text(value) or any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise UpstreamError(name, "must not contain control characters")
    if value != value.strip():
        raise UpstreamError(name, "must not start or end with whitespace")
    return value


def _parse_api_kind(value: object) -> ApiKind:
    if not isinstance(value, str) or value not in API_KINDS:
        raise UpstreamError("upstream.api_kind", f"must be one of {', '.join(API_KINDS)}")
    return value


def _json_copy(value: object, path: str, depth: int) -> Any:
    """Deep-copy a JSON value, checking it is one that jsonb and orjson accept."""
    if depth > MAX_EXTRA_BODY_DEPTH:
        raise UpstreamError(path, f"nests deeper than {MAX_EXTRA_BODY_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise UpstreamError(path, "integer does not fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UpstreamError(path, "must be a finite number")
        return float(value)
    if isinstance(value, str):
        problem = _bad_text(value)
        if problem:
            raise UpstreamError(path, problem)
        return str(value)
    if isinstance(value, list):
        return [_json_copy(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UpstreamError(path, "object keys must be strings")
            problem = _bad_text(k) or (
                "object keys must be at most 256 characters"
                if len(k) > MAX_BODY_KEY_CHARS
                else None
            )
            if problem:
                raise UpstreamError(path, f"key {problem}")
            out[k] = _json_copy(v, _sub(path, k), depth + 1)
        return out
    raise UpstreamError(path, "must contain only JSON values")


_SHOWN_NAME = re.compile(r"[A-Za-z_][A-Za-z_-]{0,31}")


def shown_field_name(key: str) -> str:
    """A client's field name fit to echo in an error message.

    Only short names of letters, "_" and "-" are echoed: a client may paste a secret
    where a field name belongs, and errors must never repeat a secret.
    """
    return key if _SHOWN_NAME.fullmatch(key) else "<unrecognised name>"


def _sub(path: str, key: str) -> str:
    return f"{path}.{shown_field_name(key)}"


def _parse_extra_body(value: object) -> dict[str, Any]:
    name = "upstream.extra_body"
    if not isinstance(value, Mapping):
        raise UpstreamError(name, "must be an object")
    for key in value:
        if not isinstance(key, str):
            raise UpstreamError(name, "object keys must be strings")
        if key in EXTRA_BODY_RESERVED_KEYS:
            raise UpstreamError(_sub(name, key), "is set by the proxy and cannot be overridden")
        if key.lower().replace("_", "").replace("-", "") in _CREDENTIAL_KEYS:
            raise UpstreamError(
                _sub(name, key), "looks like a credential; send the key as api_key instead"
            )
    body = cast(dict[str, Any], _json_copy(value, name, 0))
    size = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_EXTRA_BODY_BYTES:
        raise UpstreamError(name, f"must be at most {MAX_EXTRA_BODY_BYTES} bytes as JSON")
    return body


def _parse_remove_from_body(value: object) -> tuple[str, ...]:
    name = "upstream.remove_from_body"
    if not isinstance(value, list):
        raise UpstreamError(name, "must be a list of strings")
    if len(value) > MAX_REMOVE_FROM_BODY:
        raise UpstreamError(name, f"must have at most {MAX_REMOVE_FROM_BODY} entries")
    out: list[str] = []
    for i, item in enumerate(value):
        item_name = f"{name}[{i}]"
        if not isinstance(item, str):
            raise UpstreamError(item_name, "must be a string")
        if not item:
            raise UpstreamError(item_name, "must not be empty")
        if len(item) > MAX_BODY_KEY_CHARS:
            raise UpstreamError(item_name, f"must be at most {MAX_BODY_KEY_CHARS} characters")
        problem = _bad_text(item)
        if problem:
            raise UpstreamError(item_name, problem)
        if item in REMOVE_PROTECTED_KEYS:
            raise UpstreamError(
                item_name, f"{item!r} is required by the proxy and cannot be removed"
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def _parse_timeout(value: object) -> float:
    name = "upstream.timeout_s"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UpstreamError(name, "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise UpstreamError(name, "must be a finite number")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise UpstreamError(name, f"must be greater than 0 and at most {MAX_TIMEOUT_S:g}")
    return float(value)


# --------------------------------------------------------------------------
# Public model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """A validated upstream. Build it with :func:`parse_upstream`."""

    internal_id: str
    base_url: str
    api_kind: ApiKind
    extra_body: dict[str, Any] = field(default_factory=dict)
    remove_from_body: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def endpoint_url(self) -> str:
        """``base_url`` + the api kind's endpoint path."""
        return self.base_url + ENDPOINT_PATHS[self.api_kind]

    def to_json(self) -> dict[str, Any]:
        """Canonical stored form: every field present, a fresh deep copy."""
        return {
            "internal_id": self.internal_id,
            "base_url": self.base_url,
            "api_kind": self.api_kind,
            "extra_body": copy.deepcopy(self.extra_body),
            "remove_from_body": list(self.remove_from_body),
            "timeout_s": self.timeout_s,
        }

    def __hash__(self) -> int:
        # extra_body (a dict) is left out: equal objects must hash equal, and
        # dict equality treats 1, 1.0 and True alike where JSON text does not.
        return hash(
            (self.internal_id, self.base_url, self.api_kind, self.remove_from_body, self.timeout_s)
        )


def parse_upstream(value: object, *, allow_insecure: bool) -> Upstream:
    """Validate an ``upstream`` object (parsed JSON) and return its canonical form.

    Raises :class:`UpstreamError` (and nothing else) for any invalid input.
    ``allow_insecure`` is ``Settings.allow_insecure_upstream``.
    """
    if not isinstance(value, Mapping):
        raise UpstreamError("upstream", "must be an object")
    for key in value:
        if not isinstance(key, str):
            raise UpstreamError("upstream", "field names must be strings")
        if key not in _ALLOWED_FIELDS:
            hint = "; send the key as api_key, outside upstream" if key == "api_key" else ""
            raise UpstreamError(
                _sub("upstream", key),
                f"unknown field (allowed: {', '.join(_ALLOWED_FIELDS)}){hint}",
            )
    for key in _REQUIRED_FIELDS:
        if key not in value:
            raise UpstreamError(f"upstream.{key}", "is required")
    internal_id = _parse_internal_id(value["internal_id"])
    api_kind = _parse_api_kind(value["api_kind"])
    base_url = _parse_base_url(value["base_url"], allow_insecure)
    # Optional fields: absent and null both mean "default".
    raw_extra = value.get("extra_body")
    raw_remove = value.get("remove_from_body")
    raw_timeout = value.get("timeout_s")
    extra_body = _parse_extra_body(raw_extra) if raw_extra is not None else {}
    remove = _parse_remove_from_body(raw_remove) if raw_remove is not None else ()
    timeout_s = _parse_timeout(raw_timeout) if raw_timeout is not None else DEFAULT_TIMEOUT_S
    return Upstream(
        internal_id=internal_id,
        base_url=base_url,
        api_kind=api_kind,
        extra_body=extra_body,
        remove_from_body=remove,
        timeout_s=timeout_s,
    )
