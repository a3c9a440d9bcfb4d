"""Postgres: configuration rendering, the instance scripts and the operator's client.

Owns ``config`` (pure: settings in, ``postgresql.conf``/``pg_hba.conf`` text out), ``scripts/``
(the entrypoint, archive and restore commands run inside the instance containers) and ``client``
(the operator's view of one instance over the network, psycopg 3). May import ``api`` and
``kube`` (for endpoints); never ``gocd``, ``rules``, ``builders`` or ``controller``.
"""
