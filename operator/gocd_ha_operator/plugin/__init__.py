"""The ``kubectl gocdha`` plugin: status, promotion, history and logs for users at a terminal.

It talks only to the Kubernetes API (the user's kubeconfig, like kubectl), never to Postgres or
GoCD: everything it shows is what the operator wrote in status, so the plugin needs no more than
the user's own RBAC. May import ``api`` and ``kube``; never ``controller``
(the operator's process), ``local`` (the emulator and kubelet) or ``cli``.
"""
