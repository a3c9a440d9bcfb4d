"""The ``gocd-ha-operator`` command: argument parsing and one module per subcommand.

The top layer: it may import anything, including ``local`` (for ``demo``), lazily, so a
subcommand pays only for the imports it needs.
"""
