"""Services of the hub: alerts, remote commands, Home Assistant discovery, node summaries, housekeeping,
the live feed and API tokens. They use :mod:`hub.storage`, never SQL of their own."""
