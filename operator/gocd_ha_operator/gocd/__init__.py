"""The GoCD side of standby: everything that keeps a second GoCD server ready to take over.

- ``token``: the ``business-continuity-token`` file, parsed the way GoCD parsed it.
- ``mirror``: the Cold-mode mirror on the shared volume (content-addressed objects + manifest).
- ``sync_agent``: the ``sync-agent`` command, a sidecar of the primary that keeps the mirror fresh.
- ``restore``: the ``restore`` command, the init container of a server that becomes primary.
- ``addon``: the ``install-addon`` command, the business-continuity add-on jar for GoCD <= 20.5.
- ``client``: what the operator reads (health, the Warm dashboard, the Cold agent's status) and
  the pure mapping of those answers into ``status.configSync``.

A layer beside ``postgres``: it may import ``api`` and ``kube``, never ``postgres`` (the sidecar
commands run in GoCD pods and need none of it), ``rules``, ``builders`` or ``controller``.
"""
