{{/*
The ConfigMap's data (the release's, and the same in its hook Jobs' ConfigMap): the config, then every file of
files/. The Job's pods carry its checksum, so a changed config or script means a new Job.
*/}}
{{- define "llama-factory.train.configData" -}}
train.yaml: |
  {{- toYaml .Values.train.config | nindent 2 }}
{{- with .Values.train.deepspeed }}
deepspeed.json: |
  {{- toPrettyJson . | nindent 2 }}
{{- end }}
{{- include "llama-factory.scriptsData" . }}
{{- end }}

{{/* The config files of the training's ConfigMap, mounted at /config: the root context. */}}
{{- define "llama-factory.train.configFiles" -}}
{{- toJson (ternary (list "train.yaml" "deepspeed.json") (list "train.yaml") (not (empty .Values.train.deepspeed))) }}
{{- end }}

{{/*
The name of the ConfigMap of the train release's hook Jobs (download, preflight, tokenize): hooks run before
the release's own ConfigMap exists (templates/train-hooks-configmap.yaml).
*/}}
{{- define "llama-factory.train.hookConfigMapName" -}}
{{- include "llama-factory.suffixed" (dict "root" . "base" (include "llama-factory.componentName" (dict "root" . "component" "train")) "suffix" "hooks") }}
{{- end }}

{{/* The hook weight of that ConfigMap: above the storage hooks' (-21, -20), below every hook Job's. */}}
{{- define "llama-factory.train.hookConfigMapWeight" -}}-15{{- end }}

{{/*
The hook events of the train release's enabled hook Jobs, as a JSON list: their ConfigMap is a hook of the
same events, so it is there in every phase one of them runs. A Job whose hook annotations were dropped (a
tool that does not run Helm hooks) is an ordinary object and mounts the release's own ConfigMap instead.
*/}}
{{- define "llama-factory.train.hookEvents" -}}
{{- $t := .Values.train }}
{{- $events := list }}
{{- if $t.enabled }}
{{- range $job := list "download" "preflight" "tokenize" }}
{{- $j := get $t $job }}
{{- if $j.enabled }}
{{- range splitList "," (get ($j.hookAnnotations | default dict) "helm.sh/hook" | default "") }}
{{- if trim . }}{{ $events = append $events (trim .) }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson ($events | uniq) }}
{{- end }}

{{/*
The ConfigMap a train hook Job mounts (train.yaml at /config, every file of files/ at /scripts): the hooks'
own while the Job is a hook, else the release's. (dict "root" . "hookAnnotations" <the Job's annotations>)
*/}}
{{- define "llama-factory.train.hookJobConfigMap" -}}
{{- if hasKey (.hookAnnotations | default dict) "helm.sh/hook" }}
{{- include "llama-factory.train.hookConfigMapName" .root }}
{{- else }}
{{- include "llama-factory.configMapName" (dict "root" .root "component" "train") }}
{{- end }}
{{- end }}

{{/* Several pods (nodes) train together. */}}
{{- define "llama-factory.train.multiNode" -}}
{{- if gt (int .Values.train.distributed.nodes) 1 }}true{{ end }}
{{- end }}

{{/* Headless Service of a multi-node Job: gives each pod the DNS name <hostname>.<service>. */}}
{{- define "llama-factory.train.serviceName" -}}
{{- include "llama-factory.suffixed" (dict "root" . "base" (include "llama-factory.componentName" (dict "root" . "component" "train")) "suffix" "nodes") }}
{{- end }}

{{/*
Environment of distributed training: LLaMA-Factory's launcher (torchrun underneath) reads NNODES,
NODE_RANK, MASTER_ADDR, MASTER_PORT and NPROC_PER_NODE; several GPUs or DeepSpeed need FORCE_TORCHRUN. With
RDZV_ID the launch is elastic: when a worker fails, torch restarts every worker of the group (up to
MAX_RESTARTS), and each restart resumes from the run's last checkpoint. The Job and the PyTorchJob replace only
the pod that failed, so torch restarts the group; JobSet and Trainer restart it themselves. Operators that set
Kubeflow's PET_* variables instead (Trainer, the training operator) are mapped by train.sh; the rendezvous
timeout and the CPU ranks' resume reach their pods too. Call with (dict "root" . "masterAddr" <the first
node's name>).
*/}}
{{- define "llama-factory.train.distributedEnv" -}}
{{- $w := .root.Values.train }}
{{- $d := $w.distributed }}
{{- if and (ne $d.engine "rayjob") (or (gt (int $w.gpu.count) 1) (gt (int $d.nodes) 1) $w.deepspeed) }}
- name: FORCE_TORCHRUN
  value: "1"
- name: NPROC_PER_NODE
  value: {{ max 1 (int $w.gpu.count) | quote }}
{{- end }}
{{- if and (gt (int $d.nodes) 1) (has $d.engine (list "job" "jobset")) }}
- name: NNODES
  value: {{ $d.nodes | quote }}
- name: NODE_RANK
  valueFrom:
    fieldRef:
      fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
- name: MASTER_ADDR
  value: {{ .masterAddr | quote }}
- name: MASTER_PORT
  value: {{ $d.masterPort | quote }}
{{- end }}
{{- if and (gt (int $d.nodes) 1) (ne $d.engine "rayjob") }}
# how long the pods wait for each other: join_timeout of the elastic rendezvous, timeout of the static one
- name: PET_RDZV_CONF
  value: {{ printf "join_timeout=%d,timeout=%d" (int $d.rendezvousTimeout) (int $d.rendezvousTimeout) | quote }}
{{- if eq (int $w.gpu.count) 0 }}
# ranks on CPU: train.sh lets torch resume their checkpoints (files/cpu_ranks.py)
- name: LFK_RANKS_ON_CPU
  value: "1"
{{- end }}
{{- if and (has $d.engine (list "job" "pytorchjob")) (gt (int $d.maxRestarts) 0) }}
- name: RDZV_ID
  value: {{ .root.Values.experiment.runId | default .root.Release.Name | quote }}
- name: MIN_NNODES
  value: {{ $d.nodes | quote }}
- name: MAX_NNODES
  value: {{ $d.nodes | quote }}
- name: MAX_RESTARTS
  value: {{ $d.maxRestarts | quote }}
# a fresh store address every rendezvous round: torch keeps the first round's otherwise, and a pod that
# replaces a preempted one waits for an address the survivors never publish again (measured: torch 2.11)
- name: TORCH_DISABLE_SHARE_RDZV_TCP_STORE
  value: "1"
{{- end }}
{{- end }}
{{- if eq $d.engine "rayjob" }}
- name: USE_RAY
  value: "1"
{{- end }}
{{- with $d.nccl.debug }}
- name: NCCL_DEBUG
  value: {{ . | quote }}
{{- end }}
{{- with $d.nccl.socketIfname }}
- name: NCCL_SOCKET_IFNAME
  value: {{ . | quote }}
{{- end }}
{{- if $d.nccl.ibDisable }}
- name: NCCL_IB_DISABLE
  value: "1"
{{- end }}
{{- end }}

{{/*
The Kueue labels of a workload, when a queue is set: its queue and, optionally, its WorkloadPriorityClass
(dict "queue" <name> "priority" <class> "indent" <n>).
*/}}
{{- define "llama-factory.queueLabel" -}}
{{- with .queue }}
{{- printf "kueue.x-k8s.io/queue-name: %s" (quote .) | nindent $.indent }}
{{- with $.priority }}
{{- printf "kueue.x-k8s.io/priority-class: %s" (quote .) | nindent $.indent }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod template of the training pods, for every engine: (dict "root" . "w" .Values.train "component"
"train" "containerName" <name> "masterAddr" <first node> "restartPolicy" <policy> "subdomain" <service>).
*/}}
{{- define "llama-factory.train.podTemplate" -}}
{{- $w := .w }}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "llama-factory.podLabels" . | nindent 4 }}
    {{- include "llama-factory.queueLabel" (dict "queue" $w.queue "priority" $w.queuePriority "indent" 4) }}
  annotations:
    checksum/config: {{ include "llama-factory.train.configData" $root | sha256sum | quote }}
    {{- with $w.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "llama-factory.podCommon" . | nindent 2 }}
  restartPolicy: {{ .restartPolicy | default "Never" }}
  {{- with .subdomain }}
  subdomain: {{ . | quote }}
  {{- end }}
  {{- if and (include "llama-factory.train.multiNode" $root) (gt (int $w.gpu.count) 0) }}
  {{- if not $w.affinity }}
  # one pod per node: the GPUs of a node belong to one rank's torchrun (ranks on CPU may share a node)
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "llama-factory.componentSelectorLabels" (dict "root" $root "component" "train") | nindent 14 }}
  {{- end }}
  {{- end }}
  containers:
    - name: {{ .containerName | default "train" | quote }}
      {{- include "llama-factory.containerCommon" . | nindent 6 }}
      command: {{ include "llama-factory.bootCommand" (dict "script" "train.sh") }}
      env:
        {{- include "llama-factory.commonEnv" (dict "root" $root "secrets" (include "llama-factory.train.secrets" (dict "root" $root "mlflow" true) | fromJsonArray)) | nindent 8 }}
        {{- include "llama-factory.train.distributedEnv" (dict "root" $root "masterAddr" .masterAddr) | nindent 8 }}
        {{- include "llama-factory.pipEnv" $w.pipPackages | nindent 8 }}
        {{- if $w.tokenize.enabled }}
        - name: TOKENIZED_ROOT
          value: {{ $w.tokenize.root | quote }}
        {{- end }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if include "llama-factory.train.multiNode" $root }}
      ports:
        - name: rendezvous
          containerPort: {{ $w.distributed.masterPort }}
          protocol: TCP
      {{- end }}
      volumeMounts:
        {{- include "llama-factory.volumeMounts" . | nindent 8 }}
        {{- include "llama-factory.configMounts" . | nindent 8 }}
  volumes:
    {{- include "llama-factory.volumes" . | nindent 4 }}
    {{- include "llama-factory.configVolumes" (dict "root" $root "component" "train" "config" (include "llama-factory.train.configFiles" $root | fromJsonArray)) | nindent 4 }}
{{- end }}

