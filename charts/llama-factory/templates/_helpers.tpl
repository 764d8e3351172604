{{/*
Names. The base name is the release name (releases are named <experiment>-<component>), so resources read
as `llama31-qa-train-<hash>` rather than `llama31-qa-train-llama-factory-...`.
*/}}
{{- define "llama-factory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llama-factory.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
llama-factory.suffixed: the full name with a suffix, the base truncated first so the suffix always survives
within `max` characters (63 for most objects; Job names leave room for the pods' generated suffixes).
Call with (dict "root" . "suffix" "train" "max" 63), or with "base" to suffix another name.
*/}}
{{- define "llama-factory.suffixed" -}}
{{- $base := .base | default (include "llama-factory.fullname" .root) }}
{{- $room := int (sub (.max | default 63 | int) (add1 (len .suffix))) }}
{{- printf "%s-%s" ($base | trunc $room | trimSuffix "-") .suffix }}
{{- end }}

{{/*
llama-factory.componentName: name of a component's objects. A release named after its component
(`exp-webui` running the webui) keeps its name; otherwise the component is appended, so one release may
run several components without clashes. Call with (dict "root" . "component" "webui").
*/}}
{{- define "llama-factory.componentName" -}}
{{- $base := include "llama-factory.fullname" .root }}
{{- if hasSuffix (printf "-%s" .component) $base }}
{{- $base }}
{{- else }}
{{- include "llama-factory.suffixed" (dict "root" .root "suffix" .component) }}
{{- end }}
{{- end }}

{{- define "llama-factory.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (selectors are immutable). */}}
{{- define "llama-factory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llama-factory.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{- define "llama-factory.labels" -}}
helm.sh/chart: {{ include "llama-factory.chart" . | quote }}
{{ include "llama-factory.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: llamafactory-k8s
{{- with .Values.experiment.name }}
llamafactory-k8s/experiment: {{ . | quote }}
{{- end }}
{{- with .Values.experiment.runId }}
llamafactory-k8s/run-id: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Labels and selector labels of one component: (dict "root" . "component" "train") */}}
{{- define "llama-factory.componentLabels" -}}
{{ include "llama-factory.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llama-factory.componentSelectorLabels" -}}
{{ include "llama-factory.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llama-factory.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llama-factory.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

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

{{/* "true" when a component of this release runs and so mounts the storage. */}}
{{- define "llama-factory.needsStorage" -}}
{{- $v := .Values }}
{{- if or $v.webui.enabled $v.train.enabled $v.merge.enabled $v.eval.enabled $v.vllm.enabled $v.adapter.enabled }}true{{ end }}
{{- end }}

{{/*
Fail once with every problem of the values, each naming the value to fix.
*/}}
{{- define "llama-factory.validateValues" -}}
{{- $errors := list }}
{{- $v := .Values }}
{{- if and (include "llama-factory.needsStorage" .) (not $v.storage.existingClaim) (not $v.storage.nfs.server) }}
{{- $errors = append $errors "storage: set storage.nfs.server and storage.nfs.path, or storage.existingClaim" }}
{{- end }}
{{- if and $v.storage.existingClaim $v.storage.nfs.server }}
{{- $errors = append $errors "storage: set either storage.nfs or storage.existingClaim, not both" }}
{{- end }}
{{- if and $v.storage.nfs.server (not $v.storage.nfs.path) }}
{{- $errors = append $errors "storage.nfs.path: required with storage.nfs.server" }}
{{- end }}
{{- if $v.train.enabled }}
{{- if not $v.train.config.output_dir }}
{{- $errors = append $errors "train.config.output_dir: required (the run's own directory, so a restarted Job resumes)" }}
{{- end }}
{{- if $v.train.download.enabled }}
{{- if not $v.train.download.repoId }}
{{- $errors = append $errors "train.download.repoId: required when train.download.enabled" }}
{{- end }}
{{- if not $v.train.config.model_name_or_path }}
{{- $errors = append $errors "train.config.model_name_or_path: required when train.download.enabled (the download target)" }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.merge.enabled }}
{{- if not $v.merge.exportDir }}
{{- $errors = append $errors "merge.exportDir: required" }}
{{- end }}
{{- if not $v.merge.verify.baseModelDir }}
{{- $errors = append $errors "merge.verify.baseModelDir: required (the size check compares with it)" }}
{{- end }}
{{- end }}
{{- if $v.eval.enabled }}
{{- if not $v.eval.scoresFile }}
{{- $errors = append $errors "eval.scoresFile: required (where both models' scores are written)" }}
{{- end }}
{{- if or (not $v.eval.baseConfig.output_dir) (not $v.eval.tunedConfig.output_dir) }}
{{- $errors = append $errors "eval.baseConfig.output_dir and eval.tunedConfig.output_dir: required (each prediction's results land there)" }}
{{- end }}
{{- end }}
{{- if $v.vllm.enabled }}
{{- if not $v.vllm.model }}
{{- $errors = append $errors "vllm.model: required" }}
{{- end }}
{{- if and $v.vllm.lora.enabled (not $v.vllm.lora.path) }}
{{- $errors = append $errors "vllm.lora.path: required when vllm.lora.enabled" }}
{{- end }}
{{- if and (gt (int $v.vllm.gpu.count) 0) (lt (int $v.vllm.gpu.count) (int $v.vllm.tensorParallelSize)) }}
{{- $errors = append $errors (printf "vllm.gpu.count: %d GPUs cannot hold tensor parallel size %d" (int $v.vllm.gpu.count) (int $v.vllm.tensorParallelSize)) }}
{{- end }}
{{- if and (eq (int $v.vllm.gpu.count) 0) (gt (int $v.vllm.tensorParallelSize) 1) }}
{{- $errors = append $errors "vllm.tensorParallelSize: vLLM on CPU (gpu.count 0) runs one process: set it to 1" }}
{{- end }}
{{- if and $v.vllm.lora.runtime.enabled (not $v.vllm.lora.enabled) }}
{{- $errors = append $errors "vllm.lora.runtime.enabled: needs vllm.lora.enabled (the base model served with --enable-lora)" }}
{{- end }}
{{- if and $v.vllm.lora.runtime.enabled (not $v.vllm.lora.runtime.registry) }}
{{- $errors = append $errors "vllm.lora.runtime.registry: required when vllm.lora.runtime.enabled" }}
{{- end }}
{{- if and $v.vllm.lora.runtime.enabled (not $v.vllm.apiKey.secretName) }}
{{- $errors = append $errors "vllm.apiKey.secretName: required when vllm.lora.runtime.enabled (else anyone who reaches the port loads and unloads adapters)" }}
{{- end }}
{{- end }}
{{- if $v.adapter.enabled }}
{{- range $key := list "name" "path" }}
{{- if not (get $v.adapter $key) }}
{{- $errors = append $errors (printf "adapter.%s: required" $key) }}
{{- end }}
{{- end }}
{{- if or (not $v.adapter.host.url) (not $v.adapter.host.registry) }}
{{- $errors = append $errors "adapter.host.url and adapter.host.registry: required (the shared vLLM that loads the adapter)" }}
{{- end }}
{{- end }}
{{- range splitList "\n" (include "llama-factory.webui.problems" .) }}
{{- if . }}{{ $errors = append $errors . }}{{ end }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nvalues problems:\n  - %s" (join "\n  - " $errors)) }}
{{- end }}
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
  mountPath: /storage
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

{{/* ConfigMap of a component: (dict "root" . "component" "train") */}}
{{- define "llama-factory.configMapName" -}}
{{- include "llama-factory.suffixed" (dict "root" .root "base" (include "llama-factory.componentName" .) "suffix" "config") }}
{{- end }}

{{/*
Job name: the component name and a hash of the pod template. Changed values (a new run id, other resources)
give a new Job - a Job's pod template is immutable, so `helm upgrade` replaces it instead of failing - while
unchanged values keep the running Job. 52 characters leave room for the pods' own suffixes; engines whose
pods' names grow longer ask for less ("max": JobSet and TrainJob 48, RayJob 47).
Call with (dict "root" . "component" "train" "podTemplate" <rendered pod template> ["max" <n>]).
*/}}
{{- define "llama-factory.jobName" -}}
{{- $hash := .podTemplate | sha256sum | trunc 8 }}
{{- include "llama-factory.suffixed" (dict "root" .root "base" (include "llama-factory.componentName" .) "suffix" $hash "max" (.max | default 52)) }}
{{- end }}

{{/*
Exit codes that fail a Job at once, without retries: a configuration error found by the scripts (3), the GPU
out of memory (4: train.sh finds CUDA's out-of-memory error in the trainer's output), and a container the
kernel killed for its memory limit (137, SIGKILL: OOMKilled). A retry would meet the same wall.
*/}}
{{- define "llama-factory.configErrorExitCode" -}}3{{- end }}
{{- define "llama-factory.failAtOnceExitCodes" -}}[3, 4, 137]{{- end }}

{{/*
Job settings shared by train and merge: retries, deadline, clean-up, and the failure policy. Preemption,
node drains and node loss (DisruptionTarget) retry without counting; a configuration error (exit 3), the GPU
out of memory (4) or the container killed for memory (137) fail at once. With several nodes, any other failure also fails the Job at once: torch elastic has already restarted
the group inside the pods, and the other ranks must not be left waiting for a missing one.
(dict "w" <values> "containers" <names> "nodes" <count>)
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
        values: {{ $.failCodes | default (include "llama-factory.failAtOnceExitCodes" $) }}
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

{{/*
A component's ConfigMap as two folders: /config (the LLaMA-Factory config) and /scripts (what the pods run).
Whole folders rather than one mount per file: some CRDs (TrainJob) key volume mounts by name.
(dict "root" . "component" "train" "config" (list files) "scripts" (list files))
*/}}
{{- define "llama-factory.configVolumes" -}}
{{- $name := include "llama-factory.configMapName" (dict "root" .root "component" .component) -}}
- name: config
  configMap:
    name: {{ $name | quote }}
    items:
      {{- range .config }}
      - {key: {{ . }}, path: {{ . }}}
      {{- end }}
- name: scripts
  configMap:
    name: {{ $name | quote }}
    items:
      {{- range .scripts }}
      - {key: {{ . }}, path: {{ . }}}
      {{- end }}
{{- end }}

{{- define "llama-factory.configMounts" -}}
- name: config
  mountPath: /config
  readOnly: true
- name: scripts
  mountPath: /scripts
  readOnly: true
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

{{/*
The step of a container's shell script that installs the values' Python packages (PIP_PACKAGES, a JSON list)
with `pip install --user` beside the image's own. The list reaches pip as separate arguments after `--`, so a
package can never be read as an option or as shell code.
*/}}
{{- define "llama-factory.pipInstall" -}}
{ [ -z "${PIP_PACKAGES:-}" ] || python3 -c 'import json, os, subprocess, sys; sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--user", "--no-cache-dir", "--quiet", "--", *json.loads(os.environ["PIP_PACKAGES"])]))'; }
{{- end }}

{{/* PIP_PACKAGES of a container, when there are packages: (list of packages) */}}
{{- define "llama-factory.pipEnv" -}}
{{- with . }}
- name: PIP_PACKAGES
  value: {{ toRawJson . | quote }}
{{- end }}
{{- end }}
