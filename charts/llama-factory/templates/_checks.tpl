{{/* Checks of the values, run once before anything renders (templates/validate.yaml). */}}

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
{{- /* the hook Jobs mount their ConfigMap, a hook that must come first */ -}}
{{- $weight := include "llama-factory.train.hookConfigMapWeight" . | int }}
{{- range $job := list "download" "preflight" "tokenize" }}
{{- $j := get $v.train $job }}
{{- $a := $j.hookAnnotations | default dict }}
{{- if and $j.enabled (hasKey $a "helm.sh/hook") (le (get $a "helm.sh/hook-weight" | default "0" | int) $weight) }}
{{- $errors = append $errors (printf "train.%s.hookAnnotations: helm.sh/hook-weight must be above %d (the hook ConfigMap with the Job's scripts comes first)" $job $weight) }}
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
