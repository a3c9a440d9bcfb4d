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
watched namespace, so both modes grant exactly the same verbs. Why each rule exists:
- gocdhaclusters: kopf lists/watches them and patches its finalizer and progress annotations;
  /status is written through the status subresource only; /finalizers "update" lets
  blockOwnerDeletion owner references be set where OwnerReferencesPermissionEnforcement is on.
- events: kopf posts events about handlers, the operator posts one per transition.
- secrets: generated credentials have fixed names, so get/create/patch/delete suffice. No list or
  watch: with them the operator could read every Secret of a namespace (or of the cluster) in one
  call, which is exactly what a leaked token should not be able to do.
- pods: read-only, to observe readiness; no pods/exec (promotion is SQL over the network).
*/}}
{{- define "gocd-ha-operator.namespacedRules" -}}
- apiGroups: ["gocdha.io"]
  resources: ["gocdhaclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["gocdha.io"]
  resources: ["gocdhaclusters/status"]
  verbs: ["get", "patch"]
- apiGroups: ["gocdha.io"]
  resources: ["gocdhaclusters/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "persistentvolumeclaims", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "create", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
