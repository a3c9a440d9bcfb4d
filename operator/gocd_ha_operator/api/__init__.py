"""The resource model: what a user writes and what the operator reports, nothing else.

Owns the ``GoCDHACluster`` spec and status (pydantic), their validation, ``metav1.Condition``
bookkeeping, the versions read from image tags, the contract constants (labels, annotations,
ports, paths), the credentials type and the CRD generated from the model. The lowest layer:
it imports nothing else of this package, and everything else may import it.
"""
