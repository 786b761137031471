"""The hub's public links: the API paths that alerts and the JSON views point to (one place, so that a route and
the links to it cannot drift apart)."""


def snapshot_url(base_url: str, event_id: str) -> str:
    """Where the API serves an event's snapshot JPEG (``GET /api/events/{event_id}/snapshot.jpg``)."""
    return f"{base_url.rstrip('/')}/api/events/{event_id}/snapshot.jpg"
