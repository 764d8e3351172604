{{/* Names and labels of the release's objects. */}}

{{/*
Names. The base name is the release name (releases are named <experiment>-<component>), so resources read
as `llama31-qa-train-<hash>` rather than `llama31-qa-train-llama-factory-...`.
*/}}
{{- define "llama-factory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llama-factory.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
llama-factory.suffixed: the full name with a suffix, the base truncated first so the suffix always survives
within `max` characters (63 for most objects; Job names leave room for the pods' generated suffixes).
Call with (dict "root" . "suffix" "train" "max" 63), or with "base" to suffix another name.
*/}}
{{- define "llama-factory.suffixed" -}}
{{- $base := .base | default (include "llama-factory.fullname" .root) }}
{{- $room := int (sub (.max | default 63 | int) (add1 (len .suffix))) }}
{{- printf "%s-%s" ($base | trunc $room | trimSuffix "-") .suffix }}
{{- end }}

{{/*
llama-factory.componentName: name of a component's objects. A release named after its component
(`exp-webui` running the webui) keeps its name; otherwise the component is appended, so one release may
run several components without clashes. Call with (dict "root" . "component" "webui").
*/}}
{{- define "llama-factory.componentName" -}}
{{- $base := include "llama-factory.fullname" .root }}
{{- if hasSuffix (printf "-%s" .component) $base }}
{{- $base }}
{{- else }}
{{- include "llama-factory.suffixed" (dict "root" .root "suffix" .component) }}
{{- end }}
{{- end }}

{{- define "llama-factory.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (selectors are immutable). */}}
{{- define "llama-factory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llama-factory.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{- define "llama-factory.labels" -}}
helm.sh/chart: {{ include "llama-factory.chart" . | quote }}
{{ include "llama-factory.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: {{ (include "llama-factory.contract" . | fromJson).labels.partOf }}
{{- with .Values.experiment.name }}
llamafactory-k8s/experiment: {{ . | quote }}
{{- end }}
{{- with .Values.experiment.runId }}
llamafactory-k8s/run-id: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Labels and selector labels of one component: (dict "root" . "component" "train") */}}
{{- define "llama-factory.componentLabels" -}}
{{ include "llama-factory.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llama-factory.componentSelectorLabels" -}}
{{ include "llama-factory.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llama-factory.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llama-factory.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ConfigMap of a component: (dict "root" . "component" "train") */}}
{{- define "llama-factory.configMapName" -}}
{{- include "llama-factory.suffixed" (dict "root" .root "base" (include "llama-factory.componentName" .) "suffix" "config") }}
{{- end }}

{{/*
Job name: the component name and a hash of the pod template. Changed values (a new run id, other resources)
give a new Job - a Job's pod template is immutable, so `helm upgrade` replaces it instead of failing - while
unchanged values keep the running Job. 52 characters leave room for the pods' own suffixes; engines whose
pods' names grow longer ask for less ("max": JobSet and TrainJob 48, RayJob 47).
Call with (dict "root" . "component" "train" "podTemplate" <rendered pod template> ["max" <n>]).
*/}}
{{- define "llama-factory.jobName" -}}
{{- $hash := .podTemplate | sha256sum | trunc 8 }}
{{- include "llama-factory.suffixed" (dict "root" .root "base" (include "llama-factory.componentName" .) "suffix" $hash "max" (.max | default 52)) }}
{{- end }}
