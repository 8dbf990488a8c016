{{/*
Least privilege, rule by rule. No "*", no listing or watching Secrets: the operator
reads nothing it does not reconcile and writes only the children it owns.
The namespaced rules go into the ClusterRole when the operator watches all
namespaces, else into a Role in each watched namespace.
*/}}
{{- define "imagefleet.namespacedRules" }}
# The resource it serves: watch every ImageModelDeployment; patch is for kopf's
# progress and diff-base annotations (prefix imagefleet.io), never the user's spec.
- apiGroups: [imagefleet.io]
  resources: [imagemodeldeployments]
  verbs: [get, list, watch, patch]
# Status: conditions, replicas, desiredReplicas, queue depth, p95, memory estimate
# (merge patches with a resourceVersion precondition).
- apiGroups: [imagefleet.io]
  resources: [imagemodeldeployments/status]
  verbs: [patch]
# The shared pools: watch every ImageModelPool (its <pool>-pool Deployment and Service
# are children like the above); patch only for kopf's annotations, never the spec.
- apiGroups: [imagefleet.io]
  resources: [imagemodelpools]
  verbs: [get, list, watch, patch]
# Pool status: conditions, replicas, members, budgets, the pool autoscaler's sizing.
- apiGroups: [imagefleet.io]
  resources: [imagemodelpools/status]
  verbs: [patch]
# The children it owns: one runtime Deployment per ImageModelDeployment, written with
# server-side apply (a PATCH that may create, hence create + patch; never PUT),
# drift-corrected, scaled by the autoscaler, deleted when no longer wanted. A child is
# created by an apply without force: when an object of that name exists that is not the
# resource's, the apply conflicts and the operator reads it (get) to report it
# (NameConflict), never taking it over. The same holds for every child below.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, get, list, watch, patch, delete]
# The children it owns: one Service per ImageModelDeployment, the same way.
- apiGroups: [""]
  resources: [services]
  verbs: [create, get, list, watch, patch, delete]
# The children it owns when a resource sets spec.routing.inferencePool.enabled: one
# InferencePool per ImageModelDeployment (Gateway API Inference Extension), the same
# way. Harmless while that CRD is not installed.
- apiGroups: [inference.networking.k8s.io]
  resources: [inferencepools]
  verbs: [create, get, list, watch, patch, delete]
# The children it owns when a resource or a pool sets spec.disruption: one PodDisruptionBudget
# per ImageModelDeployment or ImageModelPool (`<pool>-pool`), the same way.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, get, list, watch, patch, delete]
# The children it owns when the gateway's network policy is on: one NetworkPolicy per
# ImageModelDeployment (only the gateway and Prometheus reach its runtime pods), the same way.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, get, list, watch, patch, delete]
# Model cache (spec.model.cache): one PersistentVolumeClaim per resource, created by
# server-side apply and watched; never deleted (garbage collection does, with the owner).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [create, list, watch, patch]
# Model cache: the download Job, created the same way and watched (its success lets the
# runtime pods start); deleted when the model or precision changed (a new Job is made).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, list, watch, patch, delete]
# Model cache: GET the Secret a resource names in spec.model.cache.tokenSecretRef, only
# to say "not found" or "key missing" before any Job runs. Not list or watch: the
# operator cannot enumerate Secrets, and it never copies a value (the Job reads it
# through a secretKeyRef). Names are the users', so resourceNames cannot narrow it.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Kubernetes Events on the ImageModelDeployment (scaled, does not fit, ...).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}
{{- define "imagefleet.clusterRules" }}
# Read-only: GPU nodes and their nvidia.com/gpu allocatable (the fleet's capacity),
# watched into the autoscaler's index.
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
# Read-only: pods on every node, to count the GPUs already requested there (free
# capacity before scaling up), watched into the autoscaler's index.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Read-only: kopf notices when the ImageModelDeployment CRD is installed or removed.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
{{- define "imagefleet.namespaceRules" }}
# Read-only, when watching listed namespaces: kopf starts serving a listed namespace
# that is created after the operator started.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- define "imagefleet.peeringRules" }}
{{- $root := index . 0 }}
{{- $resource := index . 1 }}
# kopf peering: see the other operator replicas (list/watch cannot be narrowed by name) ...
- apiGroups: [kopf.dev]
  resources: [{{ $resource }}]
  verbs: [list, watch]
# ... and announce this replica, only in the chart's own peering object.
- apiGroups: [kopf.dev]
  resources: [{{ $resource }}]
  resourceNames: [{{ $root.Values.peering.name | quote }}]
  verbs: [patch]
{{- end }}
