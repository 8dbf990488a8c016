{{/* Names and labels shared by every template. */}}

{{- define "imagefleet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; the release name alone when it already contains the chart name. */}}
{{- define "imagefleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "imagefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "imagefleet.labels" -}}
{{ include "imagefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "imagefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "imagefleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "imagefleet.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "imagefleet.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtimeImage.repository (default .Chart.AppVersion .Values.runtimeImage.tag) -}}
{{- end -}}

{{/* kopf peering is namespaced (KopfPeering) when the operator watches listed namespaces. */}}
{{- define "imagefleet.clusterScoped" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{- define "imagefleet.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "imagefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "imagefleet.gatewayLabels" -}}
{{ include "imagefleet.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
Who may reach the runtime pods (JSON NetworkPolicy peers, for the operator's per-resource
NetworkPolicy): the chart's gateway pods on the generation port, Prometheus on the metrics port.
*/}}
{{- define "imagefleet.runtimeIngressFrom" -}}
{{- list (dict
      "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace))
      "podSelector" (dict "matchLabels" (include "imagefleet.gatewaySelectorLabels" . | fromYaml))) | toJson }}
{{- end -}}

{{- define "imagefleet.runtimeMetricsFrom" -}}
{{- list (dict
      "namespaceSelector" (dict "matchLabels" .Values.gateway.networkPolicy.prometheusNamespaceSelector)
      "podSelector" (dict "matchLabels" .Values.gateway.networkPolicy.prometheusPodSelector)) | toJson }}
{{- end -}}
