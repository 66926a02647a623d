"""Waypost: service discovery and routing for Docker hosts."""

__version__ = "0.1.0"
