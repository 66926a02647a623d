"""Registrator: Docker events → service definitions → catalog."""

from .options import RegistratorOptions
from .runner import CatalogUnavailable, Registrator

__all__ = ["CatalogUnavailable", "Registrator", "RegistratorOptions"]
