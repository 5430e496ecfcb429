"""Integrations of ml-processing into trading frameworks, each a client of the documented protocol."""
