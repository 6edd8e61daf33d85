"""Blinding: make upstream bytes say the public model id and nothing about the upstream.

:class:`Blinder` works on bytes, never on parsed JSON, so the same call handles
a JSON body, a batch of SSE events and an HTML error page, and the hot path
costs one compiled-regex pass plus one search.

1. Every ``"model": "<string>"`` member, at any depth, gets the public id as its
   value. The pattern cannot match inside a JSON string: there every ``"`` is
   escaped, so the closing quote of ``"model"`` would be preceded by ``\\``, not by
   ``l``. (The one way to hit it, an object key ending in ``\\"model``, gets its
   value rewritten, which keeps the document valid.)
2. Then every remaining occurrence (case-insensitive) of the internal id, the
   base URL and the upstream host, raw or JSON-escaped (``\\/``, ``\\uXXXX``), is
   replaced: the id by the public id, the URL and host by ``upstream``.
   Replacements are JSON-string-safe and a JSON escape sequence (``\\n``,
   ``\\u00e9``) is never cut in two, so valid JSON stays valid JSON. As a
   consequence, bytes such as ``\\nope`` are left alone for an id ``nope``: they
   decode to a newline followed by ``ope``, not to the id.
3. Occurrences of the public id are kept whole, so an internal id that is a
   substring of the public id does not garble it.

The bare host name is scrubbed only when it is specific (contains ``.`` or
``:``, as a domain, an IP or ``host:port`` does): single-label service names such
as ``vllm`` or ``model`` are ordinary words and scrubbing them would corrupt
answers (or the ``"model"`` key itself). The full base URL is always scrubbed.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import orjson

__all__ = ["UPSTREAM_TOKEN", "Blinder"]

UPSTREAM_TOKEN = b"upstream"

_MODEL_RE = re.compile(rb'("model"\s*:\s*)"(?:[^"\\]|\\.)*"', re.DOTALL)
# A JSON escape sequence: consumed as a unit so a needle is never matched from
# its middle (replacing "nope" inside b"\nope" would produce an invalid escape).
_ESCAPE = rb"\\u[0-9A-Fa-f]{4}|\\."


def _json_forms(text: str) -> list[bytes]:
    """The byte forms ``text`` can take on the wire: raw UTF-8 and JSON-escaped."""
    escaped = orjson.dumps(text)[1:-1]
    ascii_escaped = json.dumps(text, ensure_ascii=True)[1:-1].encode("ascii")
    forms = {text.encode("utf-8"), escaped, ascii_escaped}
    forms |= {form.replace(b"/", b"\\/") for form in list(forms)}
    return sorted(forms)


def _specific_host(base_url: str) -> list[str]:
    """``host`` and ``host:port`` of ``base_url`` when they are worth scrubbing."""
    parts = urlsplit(base_url)
    hosts = [parts.netloc] if parts.netloc else []
    if parts.hostname:
        hosts.append(parts.hostname)
        if ":" in parts.hostname:  # IPv6: also the bracketed form
            hosts.append(f"[{parts.hostname}]")
    return [h for h in hosts if "." in h or ":" in h]


class Blinder:
    """Rewrites bytes from one upstream so that only the public id shows."""

    __slots__ = ("_model_repl", "_needle_re", "_replacements", "_scrub_re")

    def __init__(self, public_model_id: str, internal_id: str, base_url: str) -> None:
        public_json = orjson.dumps(public_model_id)
        # Template for re.sub: keep group 1 (the key), then the quoted public id.
        self._model_repl = b"\\g<1>" + public_json.replace(b"\\", b"\\\\")
        public_escaped = public_json[1:-1]

        needles: dict[bytes, bytes] = {}  # lowercased needle -> replacement
        base = base_url.rstrip("/")
        for text, replacement in (
            (internal_id, public_escaped),
            (base, UPSTREAM_TOKEN),
            *((host, UPSTREAM_TOKEN) for host in _specific_host(base)),
        ):
            if not text or text.lower() == public_model_id.lower():
                continue
            for form in _json_forms(text):
                needles.setdefault(form.lower(), replacement)
        protected = {form.lower() for form in _json_forms(public_model_id)}
        # Protected forms map to None: matched (so they are kept whole) but not replaced.
        self._replacements: dict[bytes, bytes | None] = {
            **{form: None for form in protected},
            **needles,
        }
        # Longest first: re alternation takes the first alternative that matches.
        literals = sorted(self._replacements, key=len, reverse=True)
        alternation = b"|".join(re.escape(n) for n in literals)
        needle_alternation = b"|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
        self._needle_re = (
            re.compile(needle_alternation, re.IGNORECASE) if needle_alternation else None
        )
        # Needles before escapes, so a needle that starts with an escape (the id
        # "/x" as b"\\/x") still matches; an escape that no needle starts with is
        # consumed whole, so no needle is ever matched from inside one.
        self._scrub_re = re.compile(alternation + b"|(" + _ESCAPE + b")", re.IGNORECASE | re.DOTALL)

    def blind(self, data: bytes) -> bytes:
        """Blind ``data`` (a JSON body, SSE events or any text). Returns new bytes."""
        data = _MODEL_RE.sub(self._model_repl, data)
        if self._needle_re is None or self._needle_re.search(data) is None:
            return data
        return self._scrub_re.sub(self._replace, data)

    def _replace(self, match: re.Match[bytes]) -> bytes:
        text = match.group()
        if match.group(1) is not None:  # an escape sequence: keep it whole
            return text
        replacement = self._replacements.get(text.lower())
        return text if replacement is None else replacement
