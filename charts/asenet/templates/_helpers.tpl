{{- define "asenet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "asenet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "asenet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "asenet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "asenet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "asenet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "asenet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "asenet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Leader election is forced on with more than one replica. */}}
{{- define "asenet.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{/* The --credential value of `asenet controller`. */}}
{{- define "asenet.credentialFlag" -}}
{{- $c := .Values.azure.credential }}
{{- if eq $c "workloadIdentity" }}workload-identity
{{- else if eq $c "managedIdentity" }}managed-identity
{{- else if eq $c "clientSecret" }}client-secret
{{- else if eq $c "static" }}static
{{- else if eq $c "auto" }}auto
{{- else }}{{ fail (printf "azure.credential must be workloadIdentity, managedIdentity, clientSecret, static or auto, not %q" $c) }}
{{- end }}
{{- end }}

{{/*
The tenancy mode, `enforce` (the default) or `off`. An unquoted `off` in YAML is the
boolean false: it means off. Anything else fails the render.
*/}}
{{- define "asenet.tenancyMode" -}}
{{- $t := .Values.tenancy | default dict -}}
{{- $mode := "enforce" -}}
{{- if hasKey $t "mode" -}}
{{- $raw := get $t "mode" -}}
{{- if kindIs "bool" $raw -}}
{{- if $raw -}}
{{- fail "tenancy.mode: true is not enforce or off" -}}
{{- end -}}
{{- $mode = "off" -}}
{{- else -}}
{{- $mode = toString $raw -}}
{{- end -}}
{{- end -}}
{{- if not (has $mode (list "enforce" "off")) -}}
{{- fail (printf "tenancy.mode: %q is not enforce or off" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end }}

{{/*
host:port for a listen flag; IPv6 literals in brackets. Args: (list address port).
*/}}
{{- define "asenet.hostPort" -}}
{{- $addr := index . 0 | toString -}}
{{- $port := index . 1 -}}
{{- if contains ":" $addr -}}[{{ trimAll "[]" $addr }}]:{{ $port }}{{- else -}}{{ $addr }}:{{ $port }}{{- end -}}
{{- end }}

{{/*
RUST_LOG from controller.logLevel (an enumerated level); kube's own chatter stays at warn
below debug.
*/}}
{{- define "asenet.rustLog" -}}
{{- $level := .Values.controller.logLevel -}}
{{- if has $level (list "debug" "trace") -}}{{ $level }}{{- else -}}{{ $level }},kube_runtime=warn,kube_client=warn{{- end -}}
{{- end }}
