"""mailmoat: a self-hosted inbound email gateway."""

__version__ = "0.1.0"
