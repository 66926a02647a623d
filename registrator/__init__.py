"""Registrator: Docker events → service definitions → catalog."""
