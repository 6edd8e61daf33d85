"""Redaction of secrets and personal data from prompts before they leave (partner export).

Every string in a request body is scanned; each match is replaced by
``[REDACTED:<kind>]``. Kinds, in the order they are applied:

* ``private_key``: PEM private key blocks (also one cut off by truncation);
* ``anthropic_key`` ``sk-ant-...``, ``openai_key`` ``sk-...``, ``aws_key``
  ``AKIA...``/``ASIA...``, ``github_token`` ``ghp_...``/``github_pat_...``,
  ``slack_token`` ``xox?-...``, ``jwt`` (three base64url parts starting ``eyJ``),
  ``bearer`` (the token after ``Bearer``), ``credential`` (the value of
  ``api_key=``, ``password:``, ``secret=``, ``token=`` and the like),
  ``email`` addresses;
* ``custom``: extra regular expressions (``--redact-pattern``,
  ``ABGATE_REDACT_PATTERNS`` as a JSON array of strings);
* ``high_entropy``: tokens of ``[A-Za-z0-9+/=_-]`` that look random: 20+
  characters with upper case, lower case and digits and a Shannon entropy of at
  least 3.7 bits per character (random keys that long score about 4.1); 24+
  characters with two of those classes and at least 4.0 bits; hex strings of
  32+ characters (hex cannot reach those entropies).

JSON bodies also lose the fields that carry the proxy's per-upstream user
pseudonym (``user``, ``safety_identifier``, ``metadata.user_id``): an export
never carries anything derived from a user's identity.

``version`` names the rules: ``abgate-redactor/1``, plus a digest of the extra
patterns when there are any, so an export says exactly what was applied.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["REDACTOR_VERSION", "Redactor", "patterns_from_env", "shannon_entropy"]

REDACTOR_VERSION = "abgate-redactor/1"
ENTROPY_MIN_LENGTH = 20
ENTROPY_THRESHOLD = 3.7
# Tokens with only two of upper/lower/digit: longer and more random before they count.
ENTROPY_MIN_LENGTH_TWO_CLASSES = 24
ENTROPY_THRESHOLD_TWO_CLASSES = 4.0
HEX_MIN_LENGTH = 32
_IDENTITY_FIELDS = ("user", "safety_identifier")

# (kind, pattern, replacement, triggers): a rule runs only when one of its trigger
# substrings occurs in the text (lower-cased for the case-insensitive rules), which
# skips most regex scans; a replacement may keep groups of the match.
_RULES: tuple[tuple[str, re.Pattern[str], str, tuple[str, ...], bool], ...] = tuple(
    (kind, re.compile(pattern), replacement or f"[REDACTED:{kind}]", triggers, lower)
    for kind, pattern, replacement, triggers, lower in (
        ("private_key",
         r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?"
         r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", None, ("PRIVATE KEY-----",), False),
        ("anthropic_key", r"sk-ant-[A-Za-z0-9_\-]{8,}", None, ("sk-ant-",), False),
        ("openai_key", r"\bsk-[A-Za-z0-9_\-]{16,}", None, ("sk-",), False),
        ("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", None, ("AKIA", "ASIA"), False),
        ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})", None,
         ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), False),
        ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{8,}", None, ("xox",), False),
        ("jwt", r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*", None, ("eyJ",),
         False),
        ("bearer", r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*", r"\1[REDACTED:bearer]",
         ("bearer",), True),
        ("credential",
         r"(?i)\b(api[_-]?key|secret|password|passwd|token|access[_-]?key)"
         r"([\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{6,}",
         r"\1\2[REDACTED:credential]",
         ("key", "secret", "passw", "passwd", "token"), True),
        ("email", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", None,
         ("@",), False),
    )
)
_TOKEN_RE = re.compile(rf"[A-Za-z0-9+/=_\-]{{{ENTROPY_MIN_LENGTH},}}")
_HEX_RE = re.compile(rf"[0-9a-fA-F]{{{HEX_MIN_LENGTH},}}")


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    if not text:
        return 0.0
    length = len(text)
    return -sum(n / length * math.log2(n / length) for n in Counter(text).values())


def _looks_random(token: str) -> bool:
    """Random keys mix character classes with high entropy; words and paths do not."""
    if _HEX_RE.fullmatch(token):
        return True
    classes = (
        any(c.isupper() for c in token)
        + any(c.islower() for c in token)
        + any(c.isdigit() for c in token)
    )
    if classes == 3:
        return shannon_entropy(token) >= ENTROPY_THRESHOLD
    if classes == 2 and len(token) >= ENTROPY_MIN_LENGTH_TWO_CLASSES:
        return shannon_entropy(token) >= ENTROPY_THRESHOLD_TWO_CLASSES
    return False


def patterns_from_env(value: str | None) -> list[str]:
    """``ABGATE_REDACT_PATTERNS``: a JSON array of regular expressions (empty when unset)."""
    if value is None or not value.strip():
        return []
    try:
        patterns = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ValueError("ABGATE_REDACT_PATTERNS must be a JSON array of strings") from None
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ValueError("ABGATE_REDACT_PATTERNS must be a JSON array of strings")
    return patterns


class Redactor:
    """Applies the built-in rules and ``extra_patterns`` to text and JSON values."""

    def __init__(self, extra_patterns: Sequence[str] = ()) -> None:
        custom = []
        for pattern in extra_patterns:
            if not pattern:
                raise ValueError("a redact pattern must not be empty")
            try:
                custom.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(
                    f"redact pattern {pattern!r} is not a valid regex: {exc}"
                ) from None
        self._custom = tuple(custom)
        # System prompts repeat across a whole export: redact each distinct text once.
        self.redact_text = functools.lru_cache(maxsize=4096)(self._redact_text)  # type: ignore[method-assign]
        self.version = REDACTOR_VERSION
        if extra_patterns:
            digest = hashlib.sha256(orjson.dumps(list(extra_patterns))).hexdigest()[:12]
            self.version += f"+custom.{digest}"

    def redact_text(self, text: str) -> str:
        """``text`` with every match of every rule replaced (cached per instance)."""
        return self._redact_text(text)

    def _redact_text(self, text: str) -> str:
        lowered = text.lower()
        for _, pattern, replacement, triggers, lower in _RULES:
            haystack = lowered if lower else text
            if any(trigger in haystack for trigger in triggers):
                text = pattern.sub(replacement, text)
                lowered = text.lower()
        for pattern in self._custom:
            text = pattern.sub("[REDACTED:custom]", text)
        return _TOKEN_RE.sub(
            lambda m: "[REDACTED:high_entropy]" if _looks_random(m.group()) else m.group(), text
        )

    def redact_json(self, value: Any) -> Any:
        """A copy of a request body with every string redacted and identity fields dropped."""
        if isinstance(value, dict):
            cleaned = {k: v for k, v in value.items() if k not in _IDENTITY_FIELDS}
            metadata = cleaned.get("metadata")
            if isinstance(metadata, dict) and "user_id" in metadata:
                cleaned["metadata"] = {k: v for k, v in metadata.items() if k != "user_id"}
            return {k: self._redact_value(v) for k, v in cleaned.items()}
        return self._redact_value(value)

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, list):
            return [self._redact_value(v) for v in value]
        if isinstance(value, dict):
            return {k: self._redact_value(v) for k, v in value.items()}
        return value
