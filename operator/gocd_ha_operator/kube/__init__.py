"""Kubernetes vocabulary and the thin apply layer.

Owns the names of a cluster's children, their labels and owner references, where a Service is
reached (``endpoints``), and ``apply``: create-or-patch of child objects through the official
client. May import ``api`` only. ``names``/``labels`` are pure; ``apply`` does I/O and nothing
else (no decisions).
"""
