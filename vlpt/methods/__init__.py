"""Prompt methods, one module each, registered by name (see ``vlpt.registry``)."""
