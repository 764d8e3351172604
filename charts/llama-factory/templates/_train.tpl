{{/* The ConfigMap's data; the Job's pods carry its checksum, so a changed config means a new Job. */}}
{{- define "llama-factory.train.configData" -}}
train.yaml: |
  {{- toYaml .Values.train.config | nindent 2 }}
train.sh: |
  {{- .Files.Get "files/train.sh" | nindent 2 }}
preflight.py: |
  {{- .Files.Get "files/preflight.py" | nindent 2 }}
download.py: |
  {{- .Files.Get "files/download.py" | nindent 2 }}
{{- end }}

{{- define "llama-factory.train.podTemplate" -}}
{{- $w := .w }}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "llama-factory.podLabels" . | nindent 4 }}
  annotations:
    checksum/config: {{ include "llama-factory.train.configData" $root | sha256sum }}
    {{- with $w.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "llama-factory.podCommon" . | nindent 2 }}
  restartPolicy: Never
  {{- if $w.download.enabled }}
  initContainers:
    - name: download
      {{- include "llama-factory.containerCommon" (dict "root" $root "w" $w "gpus" 0) | nindent 6 }}
      command: ["python3", "/scripts/download.py", {{ $w.download.repoId | quote }}, {{ $w.download.revision | quote }}, {{ $w.config.model_name_or_path | quote }}]
      env:
        {{- include "llama-factory.commonEnv" $root | nindent 8 }}
        {{- if eq $w.download.source "modelscope" }}
        - name: USE_MODELSCOPE_HUB
          value: "1"
        {{- end }}
      volumeMounts:
        {{- include "llama-factory.volumeMounts" . | nindent 8 }}
        - name: config
          mountPath: /scripts/download.py
          subPath: download.py
  {{- end }}
  containers:
    - name: train
      {{- include "llama-factory.containerCommon" . | nindent 6 }}
      command: ["/bin/bash", "/scripts/train.sh"]
      env:
        {{- include "llama-factory.commonEnv" $root | nindent 8 }}
        {{- with $w.pipPackages }}
        - name: PIP_PACKAGES
          value: {{ join " " . | quote }}
        {{- end }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      volumeMounts:
        {{- include "llama-factory.volumeMounts" . | nindent 8 }}
        - name: config
          mountPath: /config/train.yaml
          subPath: train.yaml
        - name: config
          mountPath: /scripts/train.sh
          subPath: train.sh
        - name: config
          mountPath: /scripts/preflight.py
          subPath: preflight.py
  volumes:
    {{- include "llama-factory.volumes" . | nindent 4 }}
    - name: config
      configMap:
        name: {{ include "llama-factory.configMapName" (dict "root" $root "component" "train") }}
{{- end }}
