"""Names of the children of a ``GoCDHACluster``: one place, so builders, the reconciler, the docs
and the tests can never disagree. Every per-side object carries the side in its name; roles move
between sides, names never do."""

from __future__ import annotations

from dataclasses import dataclass

from gocd_ha_operator.api.constants import Role, Side


@dataclass(frozen=True)
class ChildNames:
    cluster: str

    # Secrets
    @property
    def superuser_secret(self) -> str:
        return f"{self.cluster}-postgres-superuser"

    @property
    def replication_secret(self) -> str:
        return f"{self.cluster}-postgres-replication"

    @property
    def gocd_db_user_secret(self) -> str:
        return f"{self.cluster}-postgres-gocd"

    @property
    def operator_secret(self) -> str:
        return f"{self.cluster}-postgres-operator"

    @property
    def bc_token_secret(self) -> str:
        return f"{self.cluster}-bc-token"

    def gocd_db_properties_secret(self, side: Side) -> str:
        return f"{self.cluster}-gocd-db-{side}"

    @property
    def ca_secret(self) -> str:
        """The cluster CA: ``ca.crt`` and ``ca.key``, read by the operator only (it re-signs)."""
        return f"{self.cluster}-ca"

    @property
    def server_tls_secret(self) -> str:
        """The Postgres server certificate: ``tls.crt``, ``tls.key`` and the CA's ``ca.crt``."""
        return f"{self.cluster}-server-tls"

    @property
    def sync_agent_tls_secret(self) -> str:
        """Cold mode: the sync agent's serving certificate for the GoCD side Services
        (``tls.crt``, ``tls.key``, the CA's ``ca.crt``), signed by the same cluster CA."""
        return f"{self.cluster}-sync-agent-tls"

    # Postgres
    @property
    def postgres_configmap(self) -> str:
        return f"{self.cluster}-postgres"

    def postgres_statefulset(self, side: Side) -> str:
        return f"{self.cluster}-pg-{side}"

    def postgres_instance_service(self, side: Side) -> str:
        return f"{self.cluster}-pg-{side}"

    def postgres_role_service(self, role: Role) -> str:
        return f"{self.cluster}-pg-{role}"

    def postgres_data_pvc(self, side: Side) -> str:
        """The claim the StatefulSet's ``data`` volume template creates for its only pod."""
        return f"data-{self.cluster}-pg-{side}-0"

    @property
    def primary_lease(self) -> str:
        """The Lease naming the side that may be primary (held by that side's instance guard)."""
        return f"{self.cluster}-primary"

    @property
    def guard_account(self) -> str:
        """ServiceAccount, Role and RoleBinding of the instance guards (both sides)."""
        return f"{self.cluster}-pg-guard"

    @property
    def postgres_network_policy(self) -> str:
        return f"{self.cluster}-postgres"

    @property
    def postgres_pdb(self) -> str:
        return f"{self.cluster}-postgres"

    # Shared volumes
    @property
    def shared_pvc(self) -> str:
        return f"{self.cluster}-shared"

    @property
    def artifacts_pvc(self) -> str:
        return f"{self.cluster}-artifacts"

    # GoCD
    def gocd_pvc(self, side: Side) -> str:
        return f"{self.cluster}-gocd-{side}"

    def gocd_deployment(self, side: Side) -> str:
        return f"{self.cluster}-gocd-{side}"

    def gocd_side_service(self, side: Side) -> str:
        return f"{self.cluster}-gocd-{side}"

    @property
    def gocd_service(self) -> str:
        return f"{self.cluster}-gocd"

    # Backups
    @property
    def backup_pvc(self) -> str:
        return f"{self.cluster}-backup"

    def backup_job(self, backup: str) -> str:
        """``<cluster>-bk-<backup name>``: at most 40 + 4 + 16 characters (a Job name is a label
        value, 63 at most)."""
        return f"{self.cluster}-bk-{backup}"
