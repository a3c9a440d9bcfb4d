"""The instance guard: the sidecar of each Postgres pod that holds (or gives up) the primary
Lease and stops its own Postgres when it cannot renew in time.

It may import ``api``, ``kube`` and ``rules`` (the Lease rules); nothing imports it but ``cli``.
"""
