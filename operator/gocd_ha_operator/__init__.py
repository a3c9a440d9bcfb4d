"""gocd-ha-operator: a GoCD server with a replicated standby, promoted by one annotation."""

__version__ = "0.1.0"
