{{- /* The chart's name, or nameOverride: the app.kubernetes.io/name label. */}}
{{- define "lookahead.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* Name of the operator's objects: fullnameOverride, else the release name (when it contains
       the chart's name), else RELEASE-NAME. */}}
{{- define "lookahead.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lookahead.labels" -}}
app.kubernetes.io/name: {{ include "lookahead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lookahead.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lookahead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lookahead.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lookahead.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* The image: repository@digest when image.digest is set (a pinned install), else
       repository:tag (the chart's appVersion when tag is empty). */}}
{{- define "lookahead.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- /* The PodDisruptionBudget API: policy/v1 where the server serves it (1.21+), policy/v1beta1
       on 1.20. A live server lists its kinds; `helm template` knows group versions only, so
       offline the --kube-version decides (1.20.x renders policy/v1beta1). */}}
{{- define "lookahead.pdbApiVersion" -}}
{{- $caps := .Capabilities -}}
{{- if or ($caps.APIVersions.Has "policy/v1/PodDisruptionBudget") (and ($caps.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" $caps.KubeVersion.Version)) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}
