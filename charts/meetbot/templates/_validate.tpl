{{/*
Everything an install must set, checked up front so that one failed render names every
missing value at once (helm install --set ...). Called from meetbot.config, which every
template uses.
*/}}
{{- define "meetbot.validate" -}}
{{- $v := .Values -}}
{{- $errors := list -}}
{{- if eq $v.azure.auth "workload_identity" -}}
{{- if not $v.azure.storageAccount -}}
{{- $errors = append $errors "azure.storageAccount: the storage account for the job queue, bot table and transcripts (KEDA's queue scaler needs its name)" -}}
{{- end -}}
{{- else if and (not $v.azure.storageAccount) (not (and $v.azure.blobUrl $v.azure.queueUrl $v.azure.tableUrl)) -}}
{{- $errors = append $errors "azure.storageAccount (or all of azure.blobUrl, azure.queueUrl and azure.tableUrl): the storage account for the job queue, bot table and transcripts" -}}
{{- end -}}
{{- if eq $v.azure.auth "workload_identity" -}}
{{- range $c := list "worker" "serve" "sweep" -}}
{{- if and (not $v.azure.clientId) (not (index $v $c).azureClientId) -}}
{{- $errors = append $errors (printf "azure.clientId (or %s.azureClientId): the workload identity client ID the %s pods use" $c $c) -}}
{{- end -}}
{{- end -}}
{{- else if not $v.azure.sasSecret -}}
{{- $errors = append $errors "azure.sasSecret: with azure.auth=sas, a Secret with keys storage-sas and connection" -}}
{{- end -}}
{{- if and $v.azure.keyVault.url (not $v.azure.keyVault.keyName) -}}
{{- $errors = append $errors "azure.keyVault.keyName: the RSA key that wraps recording keys in azure.keyVault.url" -}}
{{- end -}}
{{- if eq $v.secrets.source "secret" -}}
{{- if not $v.secrets.existingSecret -}}
{{- $errors = append $errors "secrets.existingSecret: a Secret with key tenants.toml (and stt-api-key for stt.mode=openai)" -}}
{{- end -}}
{{- else -}}
{{- if not $v.secrets.keyVault.name -}}
{{- $errors = append $errors "secrets.keyVault.name: the Key Vault holding the tenants file" -}}
{{- end -}}
{{- if not (or $v.secrets.keyVault.tenantId $v.azure.tenantId) -}}
{{- $errors = append $errors "secrets.keyVault.tenantId (or azure.tenantId): the vault's Entra tenant" -}}
{{- end -}}
{{- if ne $v.azure.auth "workload_identity" -}}
{{- $errors = append $errors "secrets.source=keyVault needs azure.auth=workload_identity" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.stt.mode "openai") (not $v.stt.url) -}}
{{- $errors = append $errors "stt.url: the OpenAI-compatible API base (e.g. https://api.openai.com/v1) for stt.mode=openai" -}}
{{- end -}}
{{- range $key := list "data_dir" "spool_dir" -}}
{{- if hasKey (default dict $v.config.paths) $key -}}
{{- $errors = append $errors (printf "config.paths.%s: set by the chart to match its volumes (/data, /data/spool); remove it" $key) -}}
{{- end -}}
{{- end -}}
{{- if hasKey (default dict $v.config.stt) "model_dir" -}}
{{- $errors = append $errors "config.stt.model_dir: use model.dir (the image's environment would override the config file)" -}}
{{- end -}}
{{- if eq (int $v.serve.port) (int $v.serve.metricsPort) -}}
{{- $errors = append $errors "serve.metricsPort: must differ from serve.port (metrics are never served on the API port)" -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nmeetbot: set these values:\n  - %s\n\nSee docs/deploy.md." (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
