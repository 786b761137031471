"""API authentication (bearer tokens stored as SHA-256) and the rate limit of command endpoints.

A client sends ``Authorization: Bearer <token>`` (browsers' EventSource may use
``?access_token=<token>`` on ``/api/stream`` only). The hub hashes the token
and compares it in constant time with the hashes in ``auth.tokens``. Create a
token with ``maskwatch hub --new-token NAME``.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time

from hub.config import AuthConfig, hash_token


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class TokenChecker:
    """Maps a presented token to the name of its configured entry.

    :param config: the ``auth`` section; with no tokens, everyone is ``anonymous``.
    """

    def __init__(self, config: AuthConfig) -> None:
        self.enabled = config.enabled
        self._hashes = [(entry.sha256, entry.name) for entry in config.tokens]

    def identify(self, token: str | None) -> str | None:
        """The token's name, ``"anonymous"`` when auth is off, or ``None`` when refused."""
        if not self.enabled:
            return "anonymous"
        if not token:
            return None
        digest = hash_token(token)
        found = None
        for known, name in self._hashes:  # compare with every entry: no timing hint of which matched
            if hmac.compare_digest(known, digest):
                found = name
        return found


class RateLimiter:
    """Token bucket per key: ``per_min`` calls a minute, bursts up to ``per_min``.

    :param per_min: allowed calls per minute and bucket size.
    """

    def __init__(self, per_min: int) -> None:
        self.capacity = float(per_min)
        self.rate = per_min / 60.0
        self._now = time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one call of ``key``: 0.0 if allowed, else seconds to wait before retrying."""
        now = self._now()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
