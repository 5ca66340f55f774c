"""Keeping secrets out of the audit log, and out of pages that show configuration.

``redact`` returns a copy of any JSON value in which secrets are replaced by a
marker ``[redacted:<fingerprint>]``. A value is a secret when

* it sits under a field whose name says so (``api_key``, ``Authorization``,
  ``clientSecret``, ``x-api-key``, ``password``, ``webhook_url`` …), at any depth,
  in dicts and in lists; the whole value is replaced, whatever it holds; or
* it looks like one wherever it appears, also inside longer text: provider keys
  (``sk-…``, ``ghp_…``, ``xox…``, ``AKIA…``, ``AIza…``, Stripe keys), our own
  ``ta_<prefix>_<secret>`` keys, JWTs, bearer and basic credentials, passwords in
  URLs, ``password=…``/``token: …`` assignments, private key blocks, and long
  random-looking strings.

The fingerprint is 8 hex digits of an HMAC keyed with the installation's
``SECRET_KEY``: it cannot be reversed or guessed from the secret alone, yet two
markers differ when the secrets differ, so the log shows that a key changed
without showing the key.

``restore_redacted`` undoes the masking where a form or an API caller sends a
masked configuration back unchanged: each marker that matches the stored value at
the same place is put back to that stored value.
"""

import json
import math
import re
from collections import Counter
from typing import Any

from django.utils.crypto import salted_hmac

MARKER_PREFIX = "[redacted"
MARKER_RE = re.compile(r"\[redacted(?::[0-9a-f]{8})?\]")
MAX_DEPTH = 64

# A field is secret when one of its words is one of these ...
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "key",
        "keys",
        "apikey",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "cookies",
        "signature",
        "sig",
        "hmac",
        "salt",
        "dsn",
        "otp",
        "pin",
        "webhook",
    }
)
# ... or its words run together contain one of these, or end in "token".
_SECRET_FRAGMENTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "authorization",
    "webhookurl",
)


def _words(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", name) if w]


def is_secret_name(name: str) -> bool:
    """Does a field called ``name`` hold a secret? ``max_tokens`` does not;
    ``access_token``, ``apiKey`` and ``X-Api-Key`` do."""
    words = _words(name)
    compact = "".join(words)
    return (
        any(w in _SECRET_WORDS for w in words)
        or any(f in compact for f in _SECRET_FRAGMENTS)
        or compact.endswith("token")
    )


def _has_digit_and_letter(text: str) -> bool:
    return any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _looks_random(text: str) -> bool:
    """Long strings that no person typed: random hex, or mixed-case letters and
    digits spread evenly (API secrets, AWS secret keys, session tokens)."""
    if not _has_digit_and_letter(text):
        return False
    if re.fullmatch(r"[0-9a-f]+|[0-9A-F]+", text):
        return _entropy(text) >= 3.0
    has_upper = any(c.isupper() for c in text)
    has_lower = any(c.islower() for c in text)
    return has_upper and has_lower and _entropy(text) >= 4.0


def _always(text: str) -> bool:
    return True


# (pattern, which group is the secret, a check the secret must pass)
_VALUE_PATTERNS: list[tuple[re.Pattern, int, Any]] = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
        0,
        _always,
    ),
    (re.compile(r"\bta_[0-9a-f]{8}_[A-Za-z0-9_-]{16,}"), 0, _always),
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"), 0, _has_digit_and_letter),
    (re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{10,}"), 0, _always),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), 0, _always),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), 0, _always),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), 0, _always),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), 0, _always),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), 0, _always),
    (re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]+"), 0, _always),
    # scheme://user:password@host
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@"), 1, _always),
    # Authorization header values
    (
        re.compile(r"(?i)\b(?:bearer|basic)\s+([A-Za-z0-9._~+/=-]{8,})"),
        1,
        lambda s: len(s) >= 24 or re.search(r"[0-9=+/._~-]", s) is not None,
    ),
    # password=…, api_key: …, ?token=… in text and query strings (a colon counts
    # only before a space, so "apikey:<prefix>", how the log names a key, stays)
    (
        re.compile(
            r"(?i)\b(?:password|passwd|pwd|secret|client[_-]?secret|token|access[_-]?token|auth[_-]?token"
            r"|refresh[_-]?token|api[_-]?key|apikey|access[_-]?key)(?:\s*=\s*|\s*:\s+)[\"']?([^\s\"'&,;]{4,})"
        ),
        1,
        lambda s: not MARKER_RE.fullmatch(s),
    ),
    # Long random-looking runs
    (re.compile(r"[A-Za-z0-9+/=_-]{32,}"), 0, _looks_random),
]


def fingerprint(value: Any) -> str:
    """8 hex digits that identify ``value`` without revealing it (keyed HMAC)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return salted_hmac("thinnest.audit.redaction", text, algorithm="sha256").hexdigest()[:8]


def marker(value: Any) -> str:
    return f"{MARKER_PREFIX}:{fingerprint(value)}]"


def redact_text(text: str) -> str:
    """``text`` with every secret-looking part replaced by a marker."""
    if MARKER_RE.fullmatch(text):
        return text
    for pattern, group, check in _VALUE_PATTERNS:

        def replace(match: re.Match, group=group, check=check) -> str:
            secret = match.group(group)
            if not secret or not check(secret):
                return match.group(0)
            start, end = match.span(group)
            whole = match.group(0)
            offset = match.start(0)
            return whole[: start - offset] + marker(secret) + whole[end - offset :]

        text = pattern.sub(replace, text)
    return text


def _redact_whole(value: Any) -> Any:
    """The value under a secret field name: kept only when it cannot hold a secret."""
    if value is None or isinstance(value, bool) or value == "":
        return value
    if isinstance(value, str) and MARKER_RE.fullmatch(value):
        return value
    return marker(value)


def redact(value: Any, name: str | None = None, _depth: int = 0) -> Any:
    """A copy of the JSON value ``value`` (found under the field ``name``, if
    any) with every secret replaced by a marker. Safe to apply twice."""
    if name is not None and is_secret_name(name):
        return _redact_whole(value)
    if _depth > MAX_DEPTH:
        return marker(value)
    if isinstance(value, dict):
        return {redact_text(str(k)): redact(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, None, _depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def has_marker(value: Any) -> bool:
    """Does any string in ``value`` still carry a redaction marker?"""
    if isinstance(value, dict):
        return any(has_marker(k) or has_marker(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_marker(v) for v in value)
    return isinstance(value, str) and MARKER_RE.search(value) is not None


_MISSING = object()


def restore_redacted(new: Any, old: Any, name: str | None = None) -> Any:
    """``new`` with each part that equals the redacted form of the same part of
    ``old`` replaced by the original: a masked value sent back unchanged keeps
    the stored secret. Anything else in ``new`` wins."""
    if old is _MISSING:
        return new
    if new == redact(old, name) and has_marker(new):
        return old
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: restore_redacted(v, old.get(k, _MISSING), k) for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list):
        return [restore_redacted(v, old[i] if i < len(old) else _MISSING) for i, v in enumerate(new)]
    return new


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves that differ between two JSON values, e.g.
    ``["api_key", "headers.Authorization"]``. Lists count as leaves."""
    if isinstance(old, dict) and isinstance(new, dict):
        paths = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                paths.append(path)
            else:
                paths.extend(changed_paths(old[key], new[key], path))
        return paths
    return [] if old == new else [prefix or "."]
