"""Patterns of secret-looking strings, for the scans of the repository and of a run's logs."""

from __future__ import annotations

import re

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    "Slack webhook": re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}"),
    "Slack token": re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}\b"),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s:@'\"{}$<>]{6,}@"),
    "assigned secret": re.compile(
        r"(?i)\b(?:password|passwd|secret|secret_access_key|api_key|token)\b\s*[:=]\s*['\"]"
        r"(?!\{\{|\$\{|<|changeme|example|placeholder|dummy|test)[^'\"\s]{12,}['\"]"
    ),
}


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(kind, match) of every secret-looking string in ``text``."""
    return [(kind, m.group(0)) for kind, pattern in SECRET_PATTERNS.items() for m in pattern.finditer(text)]
