{{/* The name clients send: the adapter's name with LoRA, else the served model name (or the path). */}}
{{- define "llama-factory.vllm.servedName" -}}
{{- $w := .Values.vllm }}
{{- if $w.lora.enabled }}
{{- $w.lora.name | default $w.servedModelName | default "adapter" }}
{{- else }}
{{- $w.servedModelName | default $w.model }}
{{- end }}
{{- end }}

{{/* --served-model-name of the base model: with LoRA the adapter takes the plain name. */}}
{{- define "llama-factory.vllm.baseName" -}}
{{- $w := .Values.vllm }}
{{- $name := $w.servedModelName | default $w.model }}
{{- if and $w.lora.enabled (eq $name (include "llama-factory.vllm.servedName" .)) }}
{{- printf "%s-base" $name }}
{{- else }}
{{- $name }}
{{- end }}
{{- end }}

{{/*
The `helm test` pod of a served model: one chat completion under `model` at `url`, its answer's shape checked
(files/chat_test.py, from the component's ConfigMap). Call with (dict "root" . "component" "vllm" "w" <values
with image, podSecurityContext, securityContext and test> "url" <server> "model" <name> "apiKey" <secretRef>
"placement" <nodeSelector and tolerations> "images" <images a request may carry; 0 or absent: text only>).
*/}}
{{- define "llama-factory.chatTestPod" -}}
{{- $w := .w }}
{{- $resources := dict "requests" (dict "cpu" "100m" "memory" "256Mi") "limits" (dict "cpu" "500m" "memory" "512Mi") }}
{{- $ctx := dict "root" .root "w" (merge (dict "resources" $resources) (omit $w "resources")) "gpus" 0 }}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "llama-factory.suffixed" (dict "root" .root "base" (include "llama-factory.componentName" (dict "root" .root "component" .component)) "suffix" "test") | quote }}
  namespace: {{ .root.Release.Namespace | quote }}
  labels:
    {{- include "llama-factory.componentLabels" (dict "root" .root "component" (printf "%s-test" .component)) | nindent 4 }}
  annotations:
    helm.sh/hook: test
    # kept until the next test run, so a failure can be read with kubectl logs
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  {{- include "llama-factory.podCommon" (dict "root" .root "w" (dict "podSecurityContext" $w.podSecurityContext "priorityClassName" "" "nodeSelector" .placement.nodeSelector "tolerations" .placement.tolerations "affinity" dict)) | nindent 2 }}
  restartPolicy: Never
  containers:
    - name: chat
      {{- include "llama-factory.containerCommon" $ctx | nindent 6 }}
      command: ["python3", "/scripts/chat_test.py"]
      env:
        - name: VLLM_URL
          value: {{ .url | quote }}
        - name: MODEL
          value: {{ .model | quote }}
        - name: PROMPT
          value: {{ $w.test.prompt | quote }}
        - name: MAX_TOKENS
          value: {{ $w.test.maxTokens | quote }}
        {{- with .apiKey.secretName }}
        - name: VLLM_API_KEY
          valueFrom:
            secretKeyRef: {{ dict "name" . "key" $.apiKey.secretKey | toJson }}
        {{- end }}
        {{- if gt (int .images) 0 }}
        # a vision-language model: the question again with a picture, whose tokens must reach the prompt
        - name: IMAGE_TEST
          value: "1"
        {{- end }}
        {{- with .record }}
        - name: PARITY_RECORD
          value: {{ . | quote }}
        {{- end }}
      volumeMounts:
        {{- include "llama-factory.scriptsMount" . | nindent 8 }}
        {{- if .record }}
        - name: storage
          mountPath: {{ include "llama-factory.storageRoot" .root }}
          readOnly: true
        {{- end }}
  volumes:
    {{- include "llama-factory.scriptsVolume" (dict "root" .root "name" (include "llama-factory.configMapName" (dict "root" .root "component" .component))) | nindent 4 }}
    {{- if .record }}
    - name: storage
      persistentVolumeClaim:
        claimName: {{ include "llama-factory.claimName" .root | quote }}
        readOnly: true
    {{- end }}
{{- end }}

{{/*
The prompt parity record beside a served folder on the storage (files/prompt_parity.py writes it), for the chat
test; empty for a model vLLM downloads from a hub, which no training of ours produced.
*/}}
{{- define "llama-factory.parityRecord" -}}
{{- $contract := include "llama-factory.contract" .root | fromJson }}
{{- if hasPrefix (printf "%s/" $contract.storage.root) (.served | toString) }}
{{- printf "%s/%s" (trimSuffix "/" .served) $contract.files.promptParityRecord }}
{{- end }}
{{- end }}
