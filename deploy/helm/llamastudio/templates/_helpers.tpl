{{/* names and labels */}}
{{- define "llamastudio.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llamastudio.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "llamastudio.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llamastudio.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Values.backend .Values.image.tag) -}}
{{- end -}}

{{- define "llamastudio.secretName" -}}
{{- default (printf "%s-keys" (include "llamastudio.fullname" .)) .Values.keys.existingSecret -}}
{{- end -}}

{{/* the GPU resource of the backend: nvidia.com/gpu, amd.com/gpu, the vulkan plugin's, or none */}}
{{- define "llamastudio.gpuLimits" -}}
{{- if eq .Values.backend "cuda" }}
nvidia.com/gpu: {{ .Values.gpu.count }}
{{- else if eq .Values.backend "rocm" }}
amd.com/gpu: {{ .Values.gpu.count }}
{{- else if and (eq .Values.backend "vulkan") .Values.gpu.resource }}
{{ .Values.gpu.resource }}: {{ .Values.gpu.count }}
{{- end }}
{{- end -}}

{{- define "llamastudio.containerSecurity" -}}
allowPrivilegeEscalation: false
runAsNonRoot: {{ .Values.securityContext.runAsNonRoot }}
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* resources with the backend's GPU limit merged in; called with (dict "res" <resources value> "root" .) */}}
{{- define "llamastudio.resources" -}}
{{- $res := deepCopy (default (dict) .res) -}}
{{- $gpu := fromYaml (include "llamastudio.gpuLimits" .root) -}}
{{- if $gpu -}}
{{- $_ := set $res "limits" (merge (deepCopy (default (dict) (get $res "limits"))) $gpu) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}
