"""The contract between Maskwatch edge nodes and the hub: topics, messages, config, MQTT."""

#: The Maskwatch release: the one place it is written (pyproject.toml reads it; see CHANGELOG.md).
__version__ = "0.1.0"
