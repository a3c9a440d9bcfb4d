"""The instance guard: the sidecar of each Postgres pod that holds (or gives up) the primary
Lease and stops its own Postgres when it cannot renew in time, and brings the ConfigMap's
``postgresql.conf`` to its Postgres with a reload (``settings.py``).

It may import ``api``, ``kube``, ``postgres.config`` (pure) and ``rules`` (the Lease rules);
nothing imports it but ``cli``.
"""
