{{/* Names */}}
{{- define "meetbot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "meetbot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's object name: <fullname>-<component>. */}}
{{- define "meetbot.componentName" -}}
{{- printf "%s-%s" (include "meetbot.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "meetbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meetbot.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "meetbot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meetbot.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: meetbot
{{- end -}}

{{- define "meetbot.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Azure client ID a component's service account is federated with. */}}
{{- define "meetbot.clientId" -}}
{{- $c := index .root.Values .component -}}
{{- default .root.Values.azure.clientId $c.azureClientId -}}
{{- end -}}

{{/*
TOML rendering. Helm reads numbers in values files as floats, and toToml would write
`max_attempts = 3.0`, which meetbot rejects for integer settings: integral numbers are
written as integers here. Strings go through toJson (JSON string escapes are valid TOML).
*/}}
{{- define "meetbot.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}{{- if $i -}}, {{ end -}}{{- include "meetbot.tomlValue" $e -}}{{- end -}}]
{{- else if kindIs "invalid" $v -}}
{{- fail "config: null values are not allowed (remove the key to keep meetbot's default)" -}}
{{- else -}}
{{- fail (printf "config: unsupported value %v (%s): settings are strings, numbers, booleans or lists" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{- define "meetbot.toml" -}}
{{- range $section, $table := . }}
{{- if not (kindIs "map" $table) }}
{{- fail (printf "config.%s: must be a table of settings (meetbot.toml has no top-level keys)" $section) }}
{{- end }}
[{{ $section }}]
{{- range $key, $value := $table }}
{{- if kindIs "map" $value }}
{{- fail (printf "config.%s.%s: nested tables are not meetbot settings" $section $key) }}
{{- end }}
{{ $key }} = {{ include "meetbot.tomlValue" $value }}
{{- end }}
{{ end }}
{{- end -}}

{{/* Storage endpoints. */}}
{{- define "meetbot.storageUrl" -}}
{{- $az := .root.Values.azure -}}
{{- $explicit := index $az (printf "%sUrl" .service) -}}
{{- if $explicit -}}
{{- $explicit -}}
{{- else if $az.storageAccount -}}
{{- printf "https://%s.%s.%s" $az.storageAccount .service $az.endpointSuffix -}}
{{- else -}}
{{- fail (printf "azure.storageAccount (or azure.%sUrl) is required" .service) -}}
{{- end -}}
{{- end -}}

{{- define "meetbot.sttServeUrl" -}}
{{- printf "http://%s:%v/v1" (include "meetbot.componentName" (dict "root" . "component" "stt-serve")) .Values.sttServe.port -}}
{{- end -}}

{{/* The settings the chart decides; .Values.config is merged over them. */}}
{{- define "meetbot.config" -}}
{{- include "meetbot.validate" . -}}
{{- $v := .Values -}}
{{- $c := dict -}}
{{- $_ := set $c "paths" (dict "data_dir" "/data" "spool_dir" "/data/spool" "audit_log" "/data/audit/audit.jsonl" "key_file" "/data/keys/kek.key") -}}
{{- $_ := set $c "store" (dict "kind" "azure_blob") -}}
{{- $azure := dict "auth" $v.azure.auth "blob_url" (include "meetbot.storageUrl" (dict "root" . "service" "blob")) "queue_url" (include "meetbot.storageUrl" (dict "root" . "service" "queue")) "table_url" (include "meetbot.storageUrl" (dict "root" . "service" "table")) -}}
{{- $_ := set $c "azure" $azure -}}
{{- $_ := set $c "queue" (dict "name" $v.queue.name "poison_name" $v.queue.poisonName "table" $v.queue.table) -}}
{{- $_ := set $c "webhooks" (dict "outbox_queue" $v.queue.outboxName) -}}
{{- $_ := set $c "tenants" (dict "file" "/etc/meetbot/secrets/tenants.toml") -}}
{{- $_ := set $c "serve" (dict "listen" (printf "0.0.0.0:%v" $v.serve.port) "metrics_listen" (printf "0.0.0.0:%v" $v.serve.metricsPort)) -}}
{{- $_ := set $c "worker" (dict "listen" (printf "0.0.0.0:%v" $v.worker.metricsPort)) -}}
{{- $_ := set $c "stt_serve" (dict "listen" (printf "0.0.0.0:%v" $v.sttServe.port) "max_concurrency" $v.sttServe.maxConcurrency) -}}
{{- if $v.azure.keyVault.url -}}
{{- $_ := set $c "keys" (dict "provider" "azure_keyvault" "vault_url" $v.azure.keyVault.url "key_name" $v.azure.keyVault.keyName) -}}
{{- $_ := set $c "audit" (dict "mac" "keys") -}}
{{- else -}}
{{- /* Receipt chains: without Key Vault there is no key every pod shares (recording
       keys are ephemeral), so entries carry no MAC (docs/deploy.md). */ -}}
{{- $_ := set $c "audit" (dict "mac" "none") -}}
{{- end -}}
{{- $stt := dict "language" $v.stt.language "model_dir" $v.model.dir -}}
{{- if eq $v.stt.mode "embedded" -}}
{{- $_ := set $stt "provider" "embedded" -}}
{{- else if eq $v.stt.mode "sttServe" -}}
{{- $_ := set $stt "provider" "openai" -}}
{{- $_ := set $stt "url" (include "meetbot.sttServeUrl" .) -}}
{{- $_ := set $stt "model" "whisper-1" -}}
{{- else -}}
{{- $_ := set $stt "provider" "openai" -}}
{{- $_ := set $stt "url" (required "stt.url is required when stt.mode is openai" $v.stt.url) -}}
{{- $_ := set $stt "model" $v.stt.model -}}
{{- end -}}
{{- $_ := set $stt "threads" $v.sttServe.threads -}}
{{- $_ := set $c "stt" $stt -}}
{{- $merged := mergeOverwrite $c (deepCopy $v.config) -}}
{{- include "meetbot.toml" $merged -}}
{{- end -}}

{{/* Pod and container security: the same for every pod. */}}
{{- define "meetbot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "meetbot.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod metadata shared by every component. */}}
{{- define "meetbot.podMetadata" -}}
{{- $c := index .root.Values .component -}}
labels:
  {{- include "meetbot.selectorLabels" (dict "root" .root "component" .name) | nindent 2 }}
  app.kubernetes.io/part-of: meetbot
  {{- if .azure }}
  azure.workload.identity/use: "true"
  {{- end }}
  {{- with $c.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "meetbot.config" .root | sha256sum }}
  {{- with .extraAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $c.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Scheduling knobs shared by every component. */}}
{{- define "meetbot.scheduling" -}}
{{- $c := index .root.Values .component -}}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment: the config file, and secrets that never go into the ConfigMap. */}}
{{- define "meetbot.env" -}}
- name: MEETBOT_CONFIG
  value: /etc/meetbot/config/meetbot.toml
# The image sets these as environment variables, which win over the config file: the chart
# sets them to its own mount points and model directory.
- name: MEETBOT_PATHS__DATA_DIR
  value: /data
- name: MEETBOT_PATHS__SPOOL_DIR
  value: /data/spool
- name: MEETBOT_STT__MODEL_DIR
  value: {{ .Values.model.dir | quote }}
{{- if eq .Values.azure.auth "sas" }}
- name: MEETBOT_AZURE__STORAGE_SAS
  valueFrom:
    secretKeyRef:
      name: {{ required "azure.sasSecret is required when azure.auth is sas" .Values.azure.sasSecret }}
      key: storage-sas
{{- end }}
{{- if eq .Values.stt.mode "sttServe" }}
# The shared stt-serve's key: workers send it as their STT API key.
- name: MEETBOT_STT__API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "meetbot.sttServeKeySecret" . }}
      key: {{ .Values.sttServe.apiKeySecretKey }}
{{- end }}
{{- if and (eq .Values.stt.mode "openai") (include "meetbot.sttKeySecret" .) }}
- name: MEETBOT_STT__API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "meetbot.sttKeySecret" . }}
      key: stt-api-key
      # A self-hosted OpenAI-compatible server may need no key.
      optional: true
{{- end }}
{{- end -}}

{{/* The Secret holding the shared stt-serve's API key: the user's, or the one the chart generates. */}}
{{- define "meetbot.sttServeKeySecret" -}}
{{- default (include "meetbot.componentName" (dict "root" . "component" "stt-serve-key")) .Values.sttServe.apiKeySecret -}}
{{- end -}}

{{/* The Secret holding the STT API key, if there is one. */}}
{{- define "meetbot.sttKeySecret" -}}
{{- if eq .Values.secrets.source "keyVault" -}}
{{- if .Values.secrets.keyVault.sttApiKeyObject -}}{{ include "meetbot.componentName" (dict "root" . "component" "kv") }}{{- end -}}
{{- else -}}
{{- .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Config (and, with .secrets, the secrets) volumes. dict "root" "component" "secrets" */}}
{{- define "meetbot.configVolumes" -}}
{{- $v := .root.Values -}}
- name: config
  configMap:
    name: {{ include "meetbot.fullname" .root }}
{{- if .secrets }}
- name: secrets
{{- if eq $v.secrets.source "keyVault" }}
  csi:
    driver: secrets-store.csi.k8s.io
    readOnly: true
    volumeAttributes:
      secretProviderClass: {{ include "meetbot.componentName" (dict "root" .root "component" .component) }}
{{- else }}
  secret:
    secretName: {{ required "secrets.existingSecret is required when secrets.source is secret" $v.secrets.existingSecret }}
    defaultMode: 0440
    items:
      - key: tenants.toml
        path: tenants.toml
{{- end }}
{{- end }}
{{- end -}}

{{- define "meetbot.configMounts" -}}
- name: config
  mountPath: /etc/meetbot/config
  readOnly: true
{{- if .secrets }}
- name: secrets
  mountPath: /etc/meetbot/secrets
  readOnly: true
{{- end }}
{{- end -}}

{{/*
Fails unless the IPv4 CIDR keeps the cloud metadata address 169.254.169.254 out, given its
`except` list. Arguments: dict "cidr" "except" "where".
*/}}
{{- define "meetbot.ipv4ToInt" -}}
{{- $o := splitList "." . -}}
{{- if ne (len $o) 4 -}}{{- fail (printf "%q is not an IPv4 address" .) -}}{{- end -}}
{{- add (mul (atoi (index $o 0)) 16777216) (mul (atoi (index $o 1)) 65536) (mul (atoi (index $o 2)) 256) (atoi (index $o 3)) -}}
{{- end -}}

{{- define "meetbot.v4Contains" -}}
{{- /* dict "cidr" "ip" (int) → "true" or "" */ -}}
{{- $parts := splitList "/" .cidr -}}
{{- $bits := 32 -}}
{{- if eq (len $parts) 2 -}}{{- $bits = atoi (index $parts 1) -}}{{- end -}}
{{- $net := int64 (include "meetbot.ipv4ToInt" (index $parts 0)) -}}
{{- $size := 1 -}}
{{- range until (int (sub 32 $bits)) -}}{{- $size = mul $size 2 -}}{{- end -}}
{{- if eq (div $net $size) (div (int64 .ip) $size) -}}true{{- end -}}
{{- end -}}

{{- define "meetbot.assertNoMetadata" -}}
{{- $cidr := .cidr -}}
{{- if not (contains ":" $cidr) -}}
{{- range list "169.254.169.254" "168.63.129.16" -}}
{{- $ip := include "meetbot.ipv4ToInt" . -}}
{{- if include "meetbot.v4Contains" (dict "cidr" $cidr "ip" $ip) -}}
{{- $excluded := false -}}
{{- range $.except -}}
{{- if and (not (contains ":" .)) (include "meetbot.v4Contains" (dict "cidr" . "ip" $ip)) -}}{{- $excluded = true -}}{{- end -}}
{{- end -}}
{{- if not $excluded -}}
{{- fail (printf "%s: %s would allow the cloud metadata address %s" $.where $cidr .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $lower := lower $cidr -}}
{{- if and (ne $lower "::/0") (or (hasPrefix "f" $lower) (hasPrefix ":" $lower)) -}}
{{- fail (printf "%s: %s: IPv6 egress must be ::/0 or global unicast (not fc00::/7, fe80::/10, ff00::/8 or ::)" $.where $cidr) -}}
{{- end -}}
{{- $parts := splitList "/" $lower -}}
{{- if and (ne $lower "::/0") (lt (atoi (index $parts 1)) 16) -}}
{{- fail (printf "%s: %s: IPv6 egress CIDRs other than ::/0 need a prefix of /16 or longer" $.where $cidr) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Egress rules every meetbot pod that talks to the outside shares. Argument: root. */}}
{{- define "meetbot.v4Except" -}}
["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "168.63.129.16/32", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"]
{{- end -}}
{{- define "meetbot.v6Except" -}}
["::ffff:0:0/96", "64:ff9b::/96", "fc00::/7", "fe80::/10", "ff00::/8"]
{{- end -}}

{{- define "meetbot.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 10 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/* Public egress on all ports (ports: list to narrow). dict "root" "ports" */}}
{{- define "meetbot.publicEgress" -}}
{{- $root := .root -}}
- to:
  {{- range $root.Values.networkPolicy.publicCIDRs }}
    - ipBlock:
        cidr: {{ . }}
        {{- if eq . "0.0.0.0/0" }}
        except: {{ include "meetbot.v4Except" $root }}
        {{- else if eq . "::/0" }}
        except: {{ include "meetbot.v6Except" $root }}
        {{- else }}
        {{- include "meetbot.assertNoMetadata" (dict "cidr" . "except" (list) "where" "networkPolicy.publicCIDRs") }}
        {{- end }}
  {{- end }}
  {{- with .ports }}
  ports:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "meetbot.extraEgress" -}}
{{- range $i, $rule := .Values.networkPolicy.extraEgress }}
{{- if not $rule.to }}
{{- fail (printf "networkPolicy.extraEgress[%d]: a rule needs `to` (a rule without it allows every destination, the metadata address included)" $i) }}
{{- end }}
{{- range $rule.to }}
{{- with .ipBlock }}
{{- include "meetbot.assertNoMetadata" (dict "cidr" .cidr "except" (default (list) .except) "where" (printf "networkPolicy.extraEgress[%d]" $i)) }}
{{- end }}
{{- end }}
- {{ toYaml $rule | nindent 2 | trim }}
{{- end }}
{{- end -}}

{{/* Seconds in a humantime duration ("25s", "2m", "1m 30s", "500ms"), rounded up. */}}
{{- define "meetbot.seconds" -}}
{{- $ms := 0 -}}
{{- $text := lower (toString .) -}}
{{- if not (regexMatch "^\\s*([0-9]+\\s*[a-z]+\\s*)+$" $text) -}}
{{- fail (printf "%q is not a duration like \"25s\" or \"2m\"" .) -}}
{{- end -}}
{{- range regexFindAll "[0-9]+\\s*[a-z]+" $text -1 -}}
{{- $n := int64 (regexFind "[0-9]+" .) -}}
{{- $unit := regexFind "[a-z]+" . -}}
{{- if eq $unit "ms" "msec" "msecs" -}}{{- $ms = add $ms $n -}}
{{- else if has $unit (list "s" "sec" "secs" "second" "seconds") -}}{{- $ms = add $ms (mul $n 1000) -}}
{{- else if has $unit (list "m" "min" "mins" "minute" "minutes") -}}{{- $ms = add $ms (mul $n 60000) -}}
{{- else if has $unit (list "h" "hr" "hrs" "hour" "hours") -}}{{- $ms = add $ms (mul $n 3600000) -}}
{{- else -}}{{- fail (printf "%q: unit %q is not one the chart can check (use ms, s, m or h)" $text $unit) -}}
{{- end -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/* A setting from .Values.config, else meetbot's built-in default. dict "root" "section" "key" "default" */}}
{{- define "meetbot.setting" -}}
{{- $s := index .root.Values.config .section | default dict -}}
{{- if hasKey $s .key -}}{{- index $s .key -}}{{- else -}}{{- .default -}}{{- end -}}
{{- end -}}

{{/* MiB in a "512Mi" / "1Gi" quantity (values.schema.json allows only those forms). */}}
{{- define "meetbot.mib" -}}
{{- $n := int64 (regexFind "^[0-9]+" .) -}}
{{- if hasSuffix "Gi" . -}}{{- mul $n 1024 -}}{{- else -}}{{- $n -}}{{- end -}}
{{- end -}}

{{/*
Worker resources from our benchmarks (docs/deploy.md, "Sizing"): peak RSS in a meeting is
221 MB with embedded Whisper tiny.en and 22 MB with a remote STT. The memory-backed spool and
data volumes are charged to the pod's memory, so the limit is the process budget plus both
size limits: the spool can fill completely without the pod being OOM-killed.
*/}}
{{- define "meetbot.workerResources" -}}
{{- $w := .Values.worker -}}
{{- if $w.resources -}}
{{- toYaml $w.resources -}}
{{- else -}}
{{- $embedded := eq .Values.stt.mode "embedded" -}}
{{- $process := ternary 384 96 $embedded -}}
{{- $volumes := add (include "meetbot.mib" $w.spoolSizeLimit) (include "meetbot.mib" $w.dataSizeLimit) -}}
requests:
  cpu: {{ ternary "500m" "100m" $embedded }}
  memory: {{ printf "%dMi" (add $process 64) }}
limits:
  memory: {{ printf "%dMi" (add $process $volumes) }}
{{- end -}}
{{- end -}}
