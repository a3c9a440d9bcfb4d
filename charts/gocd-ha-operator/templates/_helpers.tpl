{{/*
Names and labels shared by every template. The label set is the Kubernetes recommended one
(app.kubernetes.io/*) plus helm.sh/chart; the selector uses only name + instance, which never
change over the life of a release (a Deployment's selector is immutable).
*/}}

{{- define "gocd-ha-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gocd-ha-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gocd-ha-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gocd-ha-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gocd-ha-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gocd-ha-operator.labels" -}}
helm.sh/chart: {{ include "gocd-ha-operator.chart" . }}
{{ include "gocd-ha-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: gocd-ha
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The label the Postgres NetworkPolicy of every GoCDHACluster admits (with the namespace). Fixed:
never derived from nameOverride/fullnameOverride, which would cut the operator off its databases.
*/}}
{{- define "gocd-ha-operator.operatorPodLabel" -}}
gocdha.io/operator: "true"
{{- end }}

{{- define "gocd-ha-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gocd-ha-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag[@digest]; the tag defaults to appVersion. */}}
{{- define "gocd-ha-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Rules on namespaced objects. Used by the ClusterRole (watchNamespaces empty) or by one Role per
watched namespace, so both modes grant exactly the same verbs. They are exactly what the operator
calls (tests/emulator/test_least_privilege.py derives them from a logged run and compares):
- gocdhaclusters: kopf lists/watches them and patches its finalizer and progress annotations; the
  reconcile reads the current object; /status is written through the status subresource only;
  /finalizers "update" lets blockOwnerDeletion owner references be set where
  OwnerReferencesPermissionEnforcement is on.
- events: kopf and the operator post Events (create only; core v1).
- children: read by name, created, and patched back when they drift (get/create/patch). No list or
  watch: the operator never lists children (it knows their names), and a list of Secrets would
  hand every credential of a namespace to a leaked token. No delete, except claims: the only
  object the operator deletes is a shared claim it created and no longer needs; everything else is
  garbage-collected through owner references.
- no pods: the operator observes Postgres and GoCD over the network, never through pods.
*/}}
{{- define "gocd-ha-operator.namespacedRules" -}}
- apiGroups: ["gocdha.io"]
  resources: ["gocdhaclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["gocdha.io"]
  resources: ["gocdhaclusters/status"]
  verbs: ["patch"]
- apiGroups: ["gocdha.io"]
  resources: ["gocdhaclusters/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["configmaps", "secrets", "services"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "create", "patch"]
# Backup Jobs: started, listed (with their pods, for the termination message), removed.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
# The primary Lease <name>-primary: created once, taken over by a failover, handed over by a
# switchover (a merge patch carrying resourceVersion: a compare-and-swap). `watch` only because the
# instance guards' Role grants it (RBAC lets the operator grant only what it holds).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "patch", "watch"]
# The instance guards' identity: a ServiceAccount and a Role limited to that one Lease and the
# role ConfigMap (the operator holds every right it grants there, so no escalate/bind is needed).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch"]
{{- end }}
