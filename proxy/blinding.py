"""Blinding: make upstream bytes say the public model id and nothing about the upstream.

:class:`Blinder` works on bytes, never on parsed JSON, so the same call handles
a JSON body, a batch of SSE events and an HTML error page, and the hot path
costs one compiled-regex pass, one ``lower()`` and a couple of ``in`` tests.

1. Every ``"model": "<string>"`` member, at any depth, becomes
   ``"model":"<public id>"`` (whitespace inside the member is dropped: a literal
   replacement keeps ``re.sub`` on its C fast path). The pattern cannot match
   inside a JSON string: there every ``"`` is escaped, so the closing quote of
   ``"model"`` would be preceded by ``\\``, not by ``l``. (The one way to hit it,
   an object key ending in ``\\"model``, gets its value rewritten, which keeps
   the document valid.)
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

# The string value is an unrolled loop: runs of plain bytes, each escape between
# two runs. Possessive runs let sre take a run in one step instead of trying an
# alternation per byte: a third less time on a chat stream's 20 events.
_MODEL_RE = re.compile(rb'"model"\s*+:\s*+"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_BACKSLASH = 0x5C
_U = 0x75
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _inside_escape(data: bytes, pos: int) -> bool:
    """True when ``data[pos]`` belongs to a JSON escape sequence that starts before ``pos``.

    Replacing from or up to such a position would cut the escape in two (the id
    ``nope`` "found" in ``\\nope`` is really a newline followed by ``ope``).
    """
    i = data.rfind(b"\\", max(pos - 5, 0), pos)
    if i < 0:
        return False
    run_start = i
    while run_start > 0 and data[run_start - 1] == _BACKSLASH:
        run_start -= 1
    if (i - run_start) % 2:  # the second half of an escaped backslash "\\\\"
        return False
    if i == pos - 1:  # "\\X" with X at pos
        return True
    return data[i + 1] == _U and all(c in _HEX for c in data[i + 2 : pos])


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


_MIN_SHARED_PART = 4


def _shared_part(forms: list[bytes]) -> bytes | None:
    """The longest run of bytes in every one of ``forms`` (raw and escaped forms of
    one text), so one scan finds any of them; None when shorter than 4 bytes.

    Of equal-length runs the one with the most non-letters wins: a word such as
    ``partner`` turns up in answers and would send them to the scrub for nothing.
    """
    if len(forms) == 1:
        return forms[0]
    shortest = min(forms, key=len)
    for size in range(len(shortest), _MIN_SHARED_PART - 1, -1):
        runs = [shortest[at : at + size] for at in range(len(shortest) - size + 1)]
        shared = [run for run in runs if all(run in form for form in forms)]
        if shared:
            return max(shared, key=lambda run: sum(not chr(b).isalpha() for b in run))
    return None


class Blinder:
    """Rewrites bytes from one upstream so that only the public id shows."""

    __slots__ = ("_model_repl", "_replacements", "_scrub_re", "_triggers")

    def __init__(self, public_model_id: str, internal_id: str, base_url: str) -> None:
        public_json = orjson.dumps(public_model_id)
        # A literal template (no group reference) keeps re.sub on its C fast path;
        # backslashes are doubled because re.sub reads escapes in templates.
        self._model_repl = (b'"model":' + public_json).replace(b"\\", b"\\\\")
        public_escaped = public_json[1:-1]

        needles: dict[bytes, bytes] = {}  # lowercased needle -> replacement
        probes: set[bytes] = set()
        base = base_url.rstrip("/")
        for text, replacement in (
            (internal_id, public_escaped),
            (base, UPSTREAM_TOKEN),
            *((host, UPSTREAM_TOKEN) for host in _specific_host(base)),
        ):
            if not text or text.lower() == public_model_id.lower():
                continue
            forms = [form.lower() for form in _json_forms(text)]
            for form in forms:
                needles.setdefault(form, replacement)
            shared = _shared_part(forms)
            probes.update([shared] if shared is not None else forms)
        # Quick test before the scrub, one scan per probe: every needle contains
        # a probe (the text's forms share one; the base URL contains the host's).
        self._triggers = tuple(p for p in probes if not any(q != p and q in p for q in probes))

        protected = {form.lower() for form in _json_forms(public_model_id)}
        # Protected forms map to None: matched (so they are kept whole) but not replaced.
        self._replacements: dict[bytes, bytes | None] = {
            **{form: None for form in protected},
            **needles,
        }
        # Searched in the lowercased data (same length, same offsets). Longest
        # first: re alternation takes the first alternative that matches.
        literals = sorted(self._replacements, key=len, reverse=True)
        self._scrub_re = re.compile(b"|".join(re.escape(n) for n in literals))

    def blind(self, data: bytes) -> bytes:
        """Blind ``data`` (a JSON body, SSE events or any text). Returns new bytes."""
        data = _MODEL_RE.sub(self._model_repl, data)
        if self._triggers:
            lowered = data.lower()
            for trigger in self._triggers:
                if trigger in lowered:
                    return self._scrub(data, lowered)
        return data

    def _scrub(self, data: bytes, lowered: bytes) -> bytes:
        """Replace the needles in ``data``; ``lowered`` is ``data.lower()``."""
        pieces: list[bytes] = []
        done = pos = 0
        search = self._scrub_re.search
        while (match := search(lowered, pos)) is not None:
            start, end = match.span()
            replacement = self._replacements[match.group()]
            if replacement is None:  # the public id: keep it whole
                pos = end
            elif _inside_escape(lowered, start) or _inside_escape(lowered, end):
                pos = start + 1  # not really there; a real one may overlap it
            else:
                pieces += (data[done:start], replacement)
                done = pos = end
        if not pieces:
            return data
        pieces.append(data[done:])
        return b"".join(pieces)
