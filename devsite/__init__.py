"""Development and demo runners (a private Mosquitto, an embedded broker, the demo site).

Production code (``hub``, ``edge``, ``shared``, ``models``) never imports this package; tests, benchmarks
and ``maskwatch demo`` do.
"""
