"""Helpers every live test uses: waiting for a condition, and ids no other test shares."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds passed; return its last verdict."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def unique_site(prefix: str = "t") -> str:
    """A site id no other test uses (persistent hub sessions on the shared broker outlive a test)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"
