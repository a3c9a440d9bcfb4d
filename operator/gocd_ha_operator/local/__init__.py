"""Running the operator's children as local processes, without Kubernetes.

:class:`LocalKubelet` plays the node for kmock's API emulator: used by the ``demo`` command and by
the promotion tests. See ``docs/local-kubelet.md``.

The layer that runs without a cluster: the local kubelet, the API emulator (kmock), the local
stack, the demo and the stand-in GoCD. It may import every layer but ``cli``; nothing outside
``local`` and ``cli`` may import it, so the operator proper never has an emulator-only path.
"""

from gocd_ha_operator.local.kubelet import EndpointMap, LocalKubelet, PodSpecError
from gocd_ha_operator.local.process import default_os_user, find_pg_bindir
from gocd_ha_operator.local.standin_gocd import StandinGoCDServer

__all__ = [
    "EndpointMap",
    "LocalKubelet",
    "PodSpecError",
    "StandinGoCDServer",
    "default_os_user",
    "find_pg_bindir",
]
