{{- define "tritonkit.name" -}}
{{- .Values.fullnameOverride | default .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tritonkit.selector" -}}
app.kubernetes.io/name: tritonkit
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tritonkit.labels" -}}
{{ include "tritonkit.selector" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- with .Values.release.name }}
tritonkit.dev/release: {{ . | quote }}
{{- end }}
{{- end -}}
