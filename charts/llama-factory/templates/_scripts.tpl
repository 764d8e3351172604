{{/* How the pods get their scripts (files/) and configs, and start them. */}}

{{/*
Every file of files/ (the pods' scripts and contract.json) as ConfigMap data, one key per file. Every
ConfigMap that pods mount scripts from carries all of them: one way for a script to reach a pod, and a script
imports its neighbours (podlib.py) from /scripts. The root context.
*/}}
{{- define "llama-factory.scriptsData" -}}
{{- range $path, $_ := .Files.Glob "files/*" }}
{{ base $path }}: |
  {{- $.Files.Get $path | nindent 2 }}
{{- end }}
{{- end }}

{{/* The names of the files of files/, in the order of their keys: the root context. */}}
{{- define "llama-factory.scriptNames" -}}
{{- $names := list }}
{{- range $path, $_ := .Files.Glob "files/*" }}
{{- $names = append $names (base $path) }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
The scripts volume: every file of files/ from the ConfigMap `name`, as the folder /scripts (no config file in
it). (dict "root" . "name" <ConfigMap name>)
*/}}
{{- define "llama-factory.scriptsVolume" -}}
- name: scripts
  configMap:
    name: {{ .name | quote }}
    items:
      {{- range include "llama-factory.scriptNames" .root | fromJsonArray }}
      - {key: {{ . }}, path: {{ . }}}
      {{- end }}
{{- end }}

{{- define "llama-factory.scriptsMount" -}}
- name: scripts
  mountPath: /scripts
  readOnly: true
{{- end }}

{{/*
A component's ConfigMap as two folders: /config (the LLaMA-Factory config) and /scripts (every file of files/).
Whole folders rather than one mount per file: some CRDs (TrainJob) key volume mounts by name.
(dict "root" . "component" "train" "config" (list files)), plus "name" for another ConfigMap of the same data.
*/}}
{{- define "llama-factory.configVolumes" -}}
{{- $name := .name -}}
{{- if not $name }}{{ $name = include "llama-factory.configMapName" (dict "root" .root "component" .component) }}{{ end -}}
- name: config
  configMap:
    name: {{ $name | quote }}
    items:
      {{- range .config }}
      - {key: {{ . }}, path: {{ . }}}
      {{- end }}
{{ include "llama-factory.scriptsVolume" (dict "root" .root "name" $name) }}
{{- end }}

{{- define "llama-factory.configMounts" -}}
- name: config
  mountPath: /config
  readOnly: true
{{ include "llama-factory.scriptsMount" . }}
{{- end }}

{{/*
The command of a container that runs one of files/ after installing the values' Python packages: files/boot.py
installs PIP_PACKAGES (a JSON list, each package an argument of pip after `--`: never an option, never shell
code) with `pip install --user` beside the image's own, then execs the script (a name beside it in /scripts)
with its arguments. (dict "script" <file name> "args" <list>) gives a JSON list (a YAML flow sequence), every
item quoted.
*/}}
{{- define "llama-factory.bootCommand" -}}
{{- toJson (concat (list "python3" "/scripts/boot.py" .script) (.args | default list)) }}
{{- end }}

{{/* PIP_PACKAGES of a container, when there are packages: (list of packages) */}}
{{- define "llama-factory.pipEnv" -}}
{{- with . }}
- name: PIP_PACKAGES
  value: {{ toRawJson . | quote }}
{{- end }}
{{- end }}

{{/*
The facts the generator, the chart and the pods' scripts share (files/contract.json), as JSON text:
`include "llama-factory.contract" . | fromJson` (numbers come back as float64: `int` them where printed).
Call with the root context.
*/}}
{{- define "llama-factory.contract" -}}
{{- $contract := .Files.Get "files/contract.json" | fromJson }}
{{- if not (and (hasKey $contract "exitCodes") (hasKey $contract "storage")) }}
{{- fail "files/contract.json is missing or not the chart's contract" }}
{{- end }}
{{- toJson $contract }}
{{- end }}

{{/* Where the storage is mounted in every pod (the contract's storage.root): the root context. */}}
{{- define "llama-factory.storageRoot" -}}
{{- (include "llama-factory.contract" . | fromJson).storage.root }}
{{- end }}
