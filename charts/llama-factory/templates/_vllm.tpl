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
