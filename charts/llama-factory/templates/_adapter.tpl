{{/*
The pod of an adapter Job: files/adapter_share.py register (the release's Job) or unregister (its pre-delete
hook), against the host's registry on the storage. Call with (dict "root" . "w" .Values.adapter "component"
"adapter" "action" "register"|"unregister").
*/}}
{{- define "llama-factory.adapter.podTemplate" -}}
{{- $w := .w }}
metadata:
  labels:
    {{- include "llama-factory.podLabels" . | nindent 4 }}
  annotations:
    checksum/scripts: {{ include "llama-factory.scriptsData" .root | sha256sum | quote }}
    {{- with $w.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "llama-factory.podCommon" . | nindent 2 }}
  restartPolicy: Never
  containers:
    - name: adapter
      {{- include "llama-factory.containerCommon" . | nindent 6 }}
      command: ["python3", "/scripts/adapter_share.py", {{ .action | quote }}]
      env:
        - name: ADAPTER_NAME
          value: {{ $w.name | quote }}
        - name: ADAPTER_PATH
          value: {{ $w.path | quote }}
        - name: REGISTRY
          value: {{ $w.host.registry | quote }}
        - name: OUTPUT_ROOT
          value: {{ (include "llama-factory.contract" .root | fromJson).storage.output }}
        - name: MAX_LORA_RANK
          value: {{ $w.maxLoraRank | quote }}
        - name: EXPERIMENT
          value: {{ .root.Values.experiment.name | quote }}
        - name: RUN_ID
          value: {{ .root.Values.experiment.runId | quote }}
        - name: WAIT_SECONDS
          value: {{ ternary $w.waitSeconds 120 (eq .action "register") | quote }}
        - name: STATUS_FRESH_SECONDS
          value: {{ max 30 (mul 3 $w.host.syncIntervalSeconds) | quote }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      volumeMounts:
        {{- include "llama-factory.volumeMounts" . | nindent 8 }}
        {{- include "llama-factory.scriptsMount" . | nindent 8 }}
  volumes:
    {{- include "llama-factory.volumes" . | nindent 4 }}
    {{- include "llama-factory.scriptsVolume" (dict "root" .root "name" (include "llama-factory.configMapName" .)) | nindent 4 }}
{{- end }}
