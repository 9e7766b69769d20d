{{/* Labels every object of the release carries. */}}
{{- define "detour.labels" -}}
app.kubernetes.io/part-of: detour
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* detour's image: registry/repository:tag, or @digest when one is given. */}}
{{- define "detour.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ printf "%s/%s:%s@%s" .Values.image.registry .Values.image.repository $tag .Values.image.digest }}
{{- else -}}
{{ printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag }}
{{- end -}}
{{- end }}

{{/* The modes of detour.dev/mode that the enforce entry takes. */}}
{{- define "detour.enforceSelector" -}}
{{- if eq .Values.namespaces "cluster-wide" -}}
- key: detour.dev/mode
  operator: NotIn
  values: ["off", audit]
{{- else -}}
- key: detour.dev/mode
  operator: In
  values: [enforce]
{{- end -}}
{{- end }}

{{/* The ConfigMap that holds config.yaml. */}}
{{- define "detour.configMapName" -}}
{{- .Values.config.existingConfigMap | default "detour-config" -}}
{{- end }}

{{/* The Secret with tls.crt and tls.key (not for self-managed). */}}
{{- define "detour.tlsSecretName" -}}
{{- if eq .Values.certificates.source "provided" -}}
{{- .Values.certificates.provided.secretName -}}
{{- else -}}
detour-tls
{{- end -}}
{{- end }}

{{/* The checks the schema cannot make. */}}
{{- define "detour.validate" -}}
{{- if and (eq .Values.mode "native") .Values.config.existingConfigMap -}}
{{- fail "mode=native compiles the rules into the policies: config.existingConfigMap is not read; pass --set-file native.policy=<(detour policy --config rules.yaml)" -}}
{{- end -}}
{{- if and (eq .Values.mode "native") (eq .Values.certificates.source "provided") -}}
{{- fail "mode=native has no webhook and no certificate: leave certificates.source as it is" -}}
{{- end -}}
{{- if and (eq .Values.mode "none") (not .Values.proxy.enabled) -}}
{{- fail "mode=none installs neither the webhook nor the policies: with it, set proxy.enabled=true (a release of detour proxy alone)" -}}
{{- end -}}
{{- if and (eq .Release.Namespace "kube-system") -}}
{{- fail "install detour in a namespace of its own (e.g. --namespace detour-system --create-namespace), not kube-system" -}}
{{- end -}}
{{- end }}
