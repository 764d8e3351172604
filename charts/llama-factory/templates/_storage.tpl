{{/* The shared storage: the claim, its volume, and how hook Jobs mount it. */}}

{{/* The claim mounted at /storage: the existing one, or the one this release creates for NFS. */}}
{{- define "llama-factory.claimName" -}}
{{- if .Values.storage.existingClaim }}
{{- .Values.storage.existingClaim }}
{{- else }}
{{- include "llama-factory.suffixed" (dict "root" . "suffix" "storage") }}
{{- end }}
{{- end }}

{{/* PersistentVolumes are cluster-wide: the namespace is part of the name. */}}
{{- define "llama-factory.volumeName" -}}
{{- $base := printf "%s-%s" .Release.Namespace (include "llama-factory.fullname" .) }}
{{- if le (len $base) 55 }}
{{- printf "%s-storage" $base }}
{{- else }}
{{- /* too long: a hash keeps the names of the releases of one experiment apart */ -}}
{{- printf "%s-%s-storage" ($base | trunc 46 | trimSuffix "-") ($base | sha256sum | trunc 8) }}
{{- end }}
{{- end }}

{{/* "true" when a component of this release runs and so mounts the storage. */}}
{{- define "llama-factory.needsStorage" -}}
{{- $v := .Values }}
{{- if or $v.webui.enabled $v.train.enabled $v.merge.enabled $v.eval.enabled $v.vllm.enabled $v.adapter.enabled }}true{{ end }}
{{- end }}

{{/*
The volumes of a hook Job: the release's claim (in a release whose hooks mount it, the claim and its volume are
themselves hooks that run first: templates/storage.yaml; with storage.claimAsHook false, Argo CD's case, the
NFS export inline) and /tmp. Call with (dict "root" . "readOnly" <bool>).
*/}}
{{- define "llama-factory.hookVolumes" -}}
{{- $s := .root.Values.storage }}
- name: storage
  {{- if or $s.existingClaim $s.claimAsHook }}
  persistentVolumeClaim:
    claimName: {{ include "llama-factory.claimName" .root | quote }}
    {{- if .readOnly }}
    readOnly: true
    {{- end }}
  {{- else }}
  # storage.claimAsHook false (Argo CD): the claim is not there yet when the hooks run
  nfs:
    server: {{ $s.nfs.server | quote }}
    path: {{ $s.nfs.path | quote }}
    {{- if .readOnly }}
    readOnly: true
    {{- end }}
  {{- end }}
- name: tmp
  emptyDir: {}
{{- end }}
