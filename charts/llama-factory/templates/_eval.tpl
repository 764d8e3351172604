{{/* The ConfigMap's data, the configs then every file of files/; the Job's pods carry its checksum, so a
changed config or script means a new Job. */}}
{{- define "llama-factory.eval.configData" -}}
base.yaml: |
  {{- toYaml .Values.eval.baseConfig | nindent 2 }}
tuned.yaml: |
  {{- toYaml .Values.eval.tunedConfig | nindent 2 }}
{{- include "llama-factory.scriptsData" . }}
{{- end }}

{{- define "llama-factory.eval.podTemplate" -}}
{{- $w := .w }}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "llama-factory.podLabels" . | nindent 4 }}
    {{- include "llama-factory.queueLabel" (dict "queue" $w.queue "indent" 4) }}
  annotations:
    checksum/config: {{ include "llama-factory.eval.configData" $root | sha256sum | quote }}
    {{- with $w.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "llama-factory.podCommon" . | nindent 2 }}
  restartPolicy: Never
  containers:
    - name: eval
      {{- include "llama-factory.containerCommon" . | nindent 6 }}
      {{- /* the image's extra packages first (mlflow, when the gate logs to MLflow), as the training pod does;
      every value is an argument of its own */ -}}
      {{- $args := list "/config/base.yaml" "/config/tuned.yaml" (printf "--metric=%s" $w.metric) (printf "--max-drop=%v" $w.maxDrop) }}
      {{- if not (kindIs "invalid" $w.floor) }}
      {{- $args = append $args (printf "--floor=%v" $w.floor) }}
      {{- end }}
      {{- $args = append $args (printf "--scores=%s" $w.scoresFile) }}
      command: {{ include "llama-factory.bootCommand" (dict "script" "eval_gate.py" "args" $args) }}
      env:
        {{- /* the gate logs its scores to MLflow: tracking and the MLflow credentials, no Hugging Face token */ -}}
        {{- include "llama-factory.commonEnv" (dict "root" $root "secrets" (list "mlflow")) | nindent 8 }}
        {{- include "llama-factory.pipEnv" $w.pipPackages | nindent 8 }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      volumeMounts:
        {{- include "llama-factory.volumeMounts" . | nindent 8 }}
        {{- include "llama-factory.configMounts" . | nindent 8 }}
  volumes:
    {{- include "llama-factory.volumes" . | nindent 4 }}
    {{- include "llama-factory.configVolumes" (dict "root" $root "component" "eval" "config" (list "base.yaml" "tuned.yaml")) | nindent 4 }}
{{- end }}
