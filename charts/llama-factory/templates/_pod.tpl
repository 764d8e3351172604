{{/* What every workload's pod and container share: image, environment, security, volumes, Job policy. */}}

{{/*
image: the component's fields, falling back to the top-level (LLaMA-Factory) image, whose tag defaults to
appVersion; another image without a tag is :latest.
*/}}
{{- define "llama-factory.image" -}}
{{- $own := .image | default dict }}
{{- $top := .root.Values.image }}
{{- $repository := $own.repository | default $top.repository }}
{{- $tag := $own.tag | default (ternary ($top.tag | default .root.Chart.AppVersion) "latest" (empty $own.repository)) }}
{{- $digest := $own.digest | default (ternary $top.digest "" (empty $own.repository)) }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{- define "llama-factory.pullPolicy" -}}
{{- (.image | default dict).pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{/*
Environment every workload shares (HOME and caches on writable paths), and what the pod uses of MLflow and
of the secrets: each secret only where it is used. Call with (dict "root" . "secrets" <list> "tracking" <bool>):
  secrets   "hfToken": HF_TOKEN (the download, and whatever loads a model from the hub); "mlflow": the MLflow
            credentials (what logs to MLflow: the training, the evaluation gate). Both by Secret reference.
  tracking  MLflow's tracking URI, experiment and tags, without credentials (the preflight checks the server);
            on by itself with "mlflow" in secrets.
(dict "root" . "credentials" <bool>) is the web UI's form: tracking, and both secrets when true. The root
context alone: neither secrets nor tracking.
*/}}
{{- define "llama-factory.commonEnv" -}}
{{- $root := .root | default . -}}
{{- $secrets := list -}}
{{- $tracking := false -}}
{{- if hasKey . "credentials" -}}
{{- $tracking = true -}}
{{- if .credentials }}{{ $secrets = list "hfToken" "mlflow" }}{{ end -}}
{{- end -}}
{{- if hasKey . "secrets" }}{{ $secrets = .secrets }}{{ end -}}
{{- if hasKey . "tracking" }}{{ $tracking = .tracking }}{{ end -}}
{{- if has "mlflow" $secrets }}{{ $tracking = true }}{{ end -}}
{{- $v := $root.Values -}}
- name: HOME
  value: /tmp/home
# the pod's uid has no /etc/passwd entry in the LLaMA-Factory and vLLM images: Python's getpass.getuser()
# (torch names its compile cache after the user) reads the name from here instead of failing with KeyError
- name: USER
  value: llamafactory
- name: HF_HOME
  value: /tmp/home/.cache/huggingface
{{- if has "hfToken" $secrets }}
{{- with $v.hfToken.secretName }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef: {{ dict "name" . "key" $v.hfToken.secretKey | toJson }}
{{- end }}
{{- end }}
{{- if and $tracking $v.mlflow.trackingUri }}
- name: MLFLOW_TRACKING_URI
  value: {{ $v.mlflow.trackingUri | quote }}
- name: MLFLOW_EXPERIMENT_NAME
  value: {{ $v.mlflow.experimentName | default $v.experiment.name | default $root.Release.Name | quote }}
- name: MLFLOW_TAGS
  value: {{ dict "experiment" ($v.experiment.name | default $root.Release.Name) "run_id" $v.experiment.runId "release" $root.Release.Name | toJson | quote }}
{{- with (and (has "mlflow" $secrets) $v.mlflow.credentials) }}
{{- if .secretName }}
{{- if .tokenKey }}
- name: MLFLOW_TRACKING_TOKEN
  valueFrom:
    secretKeyRef: {{ dict "name" .secretName "key" .tokenKey | toJson }}
{{- else }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef: {{ dict "name" .secretName "key" .usernameKey | toJson }}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef: {{ dict "name" .secretName "key" .passwordKey | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when a model reference is a hub id rather than a directory on the storage: the pod that loads it
downloads it at run time, and so needs the Hugging Face token. */}}
{{- define "llama-factory.fromHub" -}}
{{- if and . (not (hasPrefix "/" .)) }}true{{ end }}
{{- end }}

{{/* The secrets of the training side (train, preflight, tokenize): (dict "root" . "mlflow" <bool>). */}}
{{- define "llama-factory.train.secrets" -}}
{{- $secrets := list }}
{{- if .mlflow }}{{ $secrets = append $secrets "mlflow" }}{{ end }}
{{- if include "llama-factory.fromHub" (.root.Values.train.config.model_name_or_path | default "" | toString) }}
{{- $secrets = append $secrets "hfToken" }}
{{- end }}
{{- toJson $secrets }}
{{- end }}

{{/*
The pod settings every workload shares, the same shape for all: (dict "root" . "w" .Values.<component>
"component" "<component>"), plus "serviceAccountName" to override the account. Emits the pod spec fields
other than containers.
*/}}
{{- define "llama-factory.podCommon" -}}
{{- $w := .w -}}
serviceAccountName: {{ .serviceAccountName | default (include "llama-factory.serviceAccountName" .root) | quote }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ if kindIs "string" . }}{{ . | quote }}{{ else }}{{ .name | quote }}{{ end }}
  {{- end }}
{{- end }}
securityContext:
  {{- include "llama-factory.overlay" (list .root.Values.podSecurityContext $w.podSecurityContext) | nindent 2 }}
{{- with $w.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $w.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes every workload has: the storage, /dev/shm in memory, a writable /tmp, then extraVolumes. */}}
{{- define "llama-factory.volumes" -}}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "llama-factory.claimName" .root | quote }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .w.shm.sizeLimit | quote }}
- name: tmp
  emptyDir: {}
{{- with .w.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "llama-factory.volumeMounts" -}}
- name: storage
  mountPath: {{ include "llama-factory.storageRoot" .root }}
- name: dshm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
{{- with .w.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Container fields every workload has: image, security, resources with the GPU limit, envFrom.
(dict "root" . "w" <component values>), plus "gpus" to override the GPU count (0 for helper containers).
*/}}
{{- define "llama-factory.containerCommon" -}}
image: {{ include "llama-factory.image" (dict "root" .root "image" .w.image) | quote }}
imagePullPolicy: {{ include "llama-factory.pullPolicy" (dict "root" .root "image" .w.image) | quote }}
securityContext:
  {{- include "llama-factory.overlay" (list .root.Values.securityContext .w.securityContext) | nindent 2 }}
resources:
  {{- $resources := deepCopy .w.resources }}
  {{- $gpus := ternary .gpus .w.gpu.count (hasKey . "gpus") | int }}
  {{- if gt $gpus 0 }}
  {{- $limits := $resources.limits | default dict }}
  {{- $_ := set $limits .w.gpu.resourceName $gpus }}
  {{- $_ := set $resources "limits" $limits }}
  {{- end }}
  {{- toYaml $resources | nindent 2 }}
{{- with .w.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The pod labels of a component: selector labels, run labels, then the person's own. */}}
{{- define "llama-factory.podLabels" -}}
{{ include "llama-factory.componentLabels" (dict "root" .root "component" .component) }}
{{- with .w.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Exit codes that fail a Job at once, without retries (the contract's failAtOnce): a configuration error found
by the scripts (configError), the GPU out of memory (gpuOutOfMemory: train.sh finds CUDA's out-of-memory error
in the trainer's output), and a container the kernel killed for its memory limit (memoryKilled, SIGKILL:
OOMKilled). A retry would meet the same wall.
llama-factory.exitCodes: the contract's codes of (dict "root" . "names" <list of exitCodes keys>) as a YAML
flow list, "[3, 4, 137]"; without "names", the failAtOnce ones.
*/}}
{{- define "llama-factory.exitCodes" -}}
{{- $contract := include "llama-factory.contract" .root | fromJson }}
{{- $codes := list }}
{{- range (.names | default $contract.failAtOnce) }}
{{- if not (hasKey $contract.exitCodes .) }}
{{- fail (printf "files/contract.json: no exit code named %q" .) }}
{{- end }}
{{- $codes = append $codes (index $contract.exitCodes . | int | toString) }}
{{- end }}
{{- printf "[%s]" (join ", " $codes) }}
{{- end }}

{{/*
Job settings shared by the train, merge, eval and adapter Jobs: retries, deadline, clean-up, and the failure policy. Preemption,
node drains and node loss (DisruptionTarget) retry without counting; the contract's failAtOnce exit codes
(a configuration error, the GPU out of memory, the container killed for memory) fail at once, or the exit codes
named in "failAtOnce". With several nodes, any other failure also fails the Job at once: torch elastic has
already restarted the group inside the pods, and the other ranks must not be left waiting for a missing one.
(dict "root" . "w" <values> "containers" <names> "nodes" <count> ["failAtOnce" <list of exitCodes keys>])
*/}}
{{- define "llama-factory.jobSpecCommon" -}}
backoffLimit: {{ mul .w.backoffLimit (max 1 (.nodes | default 1)) }}
{{- with .w.activeDeadlineSeconds }}
activeDeadlineSeconds: {{ . }}
{{- end }}
{{- with .w.ttlSecondsAfterFinished }}
ttlSecondsAfterFinished: {{ . }}
{{- end }}
# a replacement pod starts only after the failed one is gone: a Job never has two pods on one output dir
podReplacementPolicy: Failed
podFailurePolicy:
  rules:
    # preemption, node drain or node loss: retry without counting against backoffLimit
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
    {{- range .containers }}
    - action: FailJob
      onExitCodes:
        containerName: {{ . }}
        operator: In
        values: {{ include "llama-factory.exitCodes" (dict "root" $.root "names" $.failAtOnce) }}
    {{- end }}
    {{- if gt (int (.nodes | default 1)) 1 }}
    - action: FailJob
      onExitCodes:
        containerName: train
        operator: NotIn
        values: [0]
    {{- end }}
{{- end }}

{{/*
llama-factory.overlay: (list base override) as YAML, the override's keys replacing the base's one by one.
Sprig's merge would skip false and 0 (runAsNonRoot: false, runAsUser: 0), which are exactly the overrides
people need here.
*/}}
{{- define "llama-factory.overlay" -}}
{{- $out := deepCopy (index . 0) }}
{{- range $key, $value := (index . 1) }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- toYaml $out }}
{{- end }}
