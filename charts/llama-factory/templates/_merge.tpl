{{/* The ConfigMap's data, the config then every file of files/; the Job's pods carry its checksum, so a
changed config or script means a new Job. */}}
{{- define "llama-factory.merge.configData" -}}
merge.yaml: |
  {{- toYaml .Values.merge.config | nindent 2 }}
{{- include "llama-factory.scriptsData" . }}
{{- end }}

{{- define "llama-factory.merge.podTemplate" -}}
{{- $w := .w }}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "llama-factory.podLabels" . | nindent 4 }}
    {{- include "llama-factory.queueLabel" (dict "queue" $w.queue "indent" 4) }}
  annotations:
    checksum/config: {{ include "llama-factory.merge.configData" $root | sha256sum | quote }}
    {{- with $w.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "llama-factory.podCommon" . | nindent 2 }}
  restartPolicy: Never
  containers:
    - name: merge
      {{- include "llama-factory.containerCommon" . | nindent 6 }}
      command: ["/bin/bash", "/scripts/merge.sh"]
      env:
        {{- include "llama-factory.commonEnv" $root | nindent 8 }}
        - name: EXPORT_DIR
          value: {{ $w.exportDir | quote }}
        - name: ADAPTER_DIR
          value: {{ $w.config.adapter_name_or_path | default "" | quote }}
        - name: BASE_MODEL_DIR
          value: {{ $w.verify.baseModelDir | quote }}
        - name: MERGE_DTYPE
          value: {{ $w.verify.dtype | quote }}
        - name: MIN_SIZE_RATIO
          value: {{ $w.verify.minSizeRatio | quote }}
        - name: MAX_SIZE_RATIO
          value: {{ $w.verify.maxSizeRatio | quote }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      volumeMounts:
        {{- include "llama-factory.volumeMounts" . | nindent 8 }}
        {{- include "llama-factory.configMounts" . | nindent 8 }}
  volumes:
    {{- include "llama-factory.volumes" . | nindent 4 }}
    {{- include "llama-factory.configVolumes" (dict "root" $root "component" "merge" "config" (list "merge.yaml")) | nindent 4 }}
{{- end }}
