{{/*
The web UI's Ingress annotations: the person's own, with the authentication of webui.ingress.auth as
ingress-nginx annotations laid over them. LlamaBoard has no login of its own: the Ingress is its only gate.
*/}}
{{- define "llama-factory.webui.authAnnotations" -}}
{{- $auth := .Values.webui.ingress.auth }}
{{- $out := dict }}
{{- if eq $auth.type "basic" }}
{{- $_ := set $out "nginx.ingress.kubernetes.io/auth-type" "basic" }}
{{- $_ := set $out "nginx.ingress.kubernetes.io/auth-secret" $auth.secretName }}
{{- $_ := set $out "nginx.ingress.kubernetes.io/auth-realm" $auth.realm }}
{{- else if eq $auth.type "url" }}
{{- $_ := set $out "nginx.ingress.kubernetes.io/auth-url" $auth.url }}
{{- with $auth.signin }}
{{- $_ := set $out "nginx.ingress.kubernetes.io/auth-signin" . }}
{{- end }}
{{- end }}
{{- toYaml (merge $out (deepCopy $.Values.webui.ingress.annotations)) }}
{{- end }}

{{/* "true" when the web UI's Ingress authenticates: by `auth`, or by ingress-nginx annotations given by hand. */}}
{{- define "llama-factory.webui.authenticated" -}}
{{- $ing := .Values.webui.ingress }}
{{- $a := $ing.annotations }}
{{- $nginxBasic := and (hasKey $a "nginx.ingress.kubernetes.io/auth-type") (hasKey $a "nginx.ingress.kubernetes.io/auth-secret") }}
{{- $nginxUrl := hasKey $a "nginx.ingress.kubernetes.io/auth-url" }}
{{- if or (and (eq $ing.auth.type "basic") $ing.auth.secretName) (and (eq $ing.auth.type "url") $ing.auth.url) (and (eq $ing.auth.type "annotations") $a) $nginxBasic $nginxUrl }}true{{ end }}
{{- end }}

{{/* The web UI's values problems, one per line (read by llama-factory.validateValues). */}}
{{- define "llama-factory.webui.problems" -}}
{{- $w := .Values.webui }}
{{- if $w.enabled }}
{{- $auth := $w.ingress.auth }}
{{- if and (eq $auth.type "basic") (not $auth.secretName) }}
webui.ingress.auth.secretName: required with auth type basic (a Secret with an htpasswd file under the key `auth`)
{{ end }}
{{- if and (eq $auth.type "url") (not $auth.url) }}
webui.ingress.auth.url: required with auth type url (the authentication service)
{{ end }}
{{- if and (eq $auth.type "annotations") (not $w.ingress.annotations) }}
webui.ingress.annotations: auth type annotations needs the controller's authentication annotations here
{{ end }}
{{- $authenticated := and $w.ingress.enabled (include "llama-factory.webui.authenticated" .) }}
{{- if and $w.ingress.enabled (not $authenticated) }}
webui.ingress.auth: required with webui.ingress.enabled: LlamaBoard has no login, so the Ingress must authenticate (type basic with secretName, or url)
{{ end }}
{{- if and (ne $w.service.type "ClusterIP") (not $authenticated) }}
webui.service.type: {{ $w.service.type }} exposes LlamaBoard (no login) outside the cluster; use ClusterIP (kubectl port-forward) or an Ingress with webui.ingress.auth
{{ end }}
{{- $storage := include "llama-factory.storageRoot" . }}
{{- if and $w.storage.readOnly (eq (trimSuffix "/" $w.workingDir) $storage) }}
webui.workingDir: a folder below {{ $storage }}, not the storage itself, when webui.storage.readOnly
{{ end }}
{{- end }}
{{- end }}

{{/* The web UI's working directory relative to the storage (its subPath), or "" when it is not on the storage. */}}
{{- define "llama-factory.webui.storageSubPath" -}}
{{- $dir := .Values.webui.workingDir }}
{{- $prefix := printf "%s/" (include "llama-factory.storageRoot" .) }}
{{- if hasPrefix $prefix $dir }}
{{- trimPrefix $prefix $dir | trimSuffix "/" }}
{{- end }}
{{- end }}
