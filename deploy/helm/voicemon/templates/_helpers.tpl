{{/* The release's full name: <release>-voicemon, or the release name if it says voicemon. */}}
{{- define "voicemon.fullname" -}}
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

{{- define "voicemon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; "component" is set by the caller (worker, api, topics, ...). */}}
{{- define "voicemon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: voicemon
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "voicemon.selectorLabels" . }}
{{- end -}}

{{- define "voicemon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicemon.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "voicemon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "voicemon.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "voicemon.secretName" -}}
{{- if .Values.secrets.create -}}
{{- printf "%s-secrets" (include "voicemon.fullname" .) -}}
{{- else -}}
{{- required "secrets.existingSecret: name the Secret holding VOICEMON_CLICKHOUSE_DSN and the JWT keys (or set secrets.create)" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* An image reference of a role (api or worker): repository@digest, or repository:tag. */}}
{{- define "voicemon.image" -}}
{{- $image := index .root.Values.image .role -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The non-secret settings as a container's env list (the secret ones come from the
Secret by envFrom). Inline, not a ConfigMap: the pre-install topics Job runs before any
ConfigMap of the release exists, and a changed setting rolls the pods by itself. */}}
{{- define "voicemon.env" -}}
{{- $v := .Values -}}
{{- if and (eq $v.redis.mode "sentinel") (not $v.redis.sentinels) -}}
{{- fail "redis.mode=sentinel needs redis.sentinels: the host:port of each Sentinel" -}}
{{- end -}}
{{- if and (eq $v.redis.mode "sentinel") (lt ($v.redis.waitReplicas | int) 1) -}}
{{- fail "redis.mode=sentinel needs redis.waitReplicas of 1 or more: without it a failover can lose counts already committed (docs/design.md)" -}}
{{- end -}}
{{- $env := dict
  "VOICEMON_KAFKA_BOOTSTRAP" $v.kafka.bootstrap
  "VOICEMON_KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol
  "VOICEMON_TOPIC_PARTITIONS" ($v.topics.partitions | int64 | toString)
  "VOICEMON_TOPIC_REPLICATION" ($v.topics.replication | int64 | toString)
  "VOICEMON_CONSUMER_GROUP" $v.topics.consumerGroup
  "VOICEMON_JWT_ISSUER" $v.jwt.issuer
  "VOICEMON_JWT_AUDIENCE" $v.jwt.audience
  "VOICEMON_JWT_MAX_TTL_STAFF_SECONDS" ($v.jwt.maxTtlStaffSeconds | int64 | toString)
  "VOICEMON_JWT_MAX_TTL_ORG_SECONDS" ($v.jwt.maxTtlOrgSeconds | int64 | toString)
  "VOICEMON_LOG_FORMAT" $v.logs.format
  "VOICEMON_LOG_LEVEL" $v.logs.level
  "VOICEMON_WORKER_WEB_BIND" "0.0.0.0"
  "VOICEMON_WORKER_WEB_PORT" ($v.worker.port | int64 | toString)
  "VOICEMON_WORKER_DATA_DIR" "/app/var/faust"
  "VOICEMON_API_DOCS_ENABLED" (toString $v.api.docs)
  "VOICEMON_API_METRICS_ENABLED" (toString $v.api.metrics)
  "VOICEMON_API_ACCESS_LOG" (toString $v.api.accessLog)
-}}
{{- with $v.redis.url }}{{ $_ := set $env "VOICEMON_REDIS_URL" . }}{{ end -}}
{{- if eq $v.redis.mode "sentinel" }}{{ $_ := set $env "VOICEMON_REDIS_SENTINELS" (join "," $v.redis.sentinels) }}{{ $_ := set $env "VOICEMON_REDIS_SENTINEL_MASTER" $v.redis.sentinelMaster }}{{ end -}}
{{- if eq $v.redis.mode "cluster" }}{{ $_ := set $env "VOICEMON_REDIS_CLUSTER" "true" }}{{ end -}}
{{- $_ := set $env "VOICEMON_REDIS_WAIT_REPLICAS" ($v.redis.waitReplicas | int64 | toString) -}}
{{- $_ := set $env "VOICEMON_REDIS_WAIT_TIMEOUT_MS" ($v.redis.waitTimeoutMs | int64 | toString) -}}
{{- with $v.kafka.sasl.mechanism }}{{ $_ := set $env "VOICEMON_KAFKA_SASL_MECHANISM" . }}{{ end -}}
{{- with $v.kafka.sasl.username }}{{ $_ := set $env "VOICEMON_KAFKA_SASL_USERNAME" . }}{{ end -}}
{{- with $v.kafka.tls.caKey }}{{ $_ := set $env "VOICEMON_KAFKA_SSL_CA_FILE" (printf "/etc/voicemon/kafka/%s" .) }}{{ end -}}
{{- with $v.kafka.tls.certKey }}{{ $_ := set $env "VOICEMON_KAFKA_SSL_CERT_FILE" (printf "/etc/voicemon/kafka/%s" .) }}{{ end -}}
{{- with $v.kafka.tls.keyKey }}{{ $_ := set $env "VOICEMON_KAFKA_SSL_KEY_FILE" (printf "/etc/voicemon/kafka/%s" .) }}{{ end -}}
{{- with $v.clickhouse.cluster }}{{ $_ := set $env "VOICEMON_CLICKHOUSE_CLUSTER" . }}{{ end -}}
{{- with $v.jwt.signingKeyId }}{{ $_ := set $env "VOICEMON_JWT_SIGNING_KEY_ID" . }}{{ end -}}
{{- with $v.jwt.jwksUrl }}{{ $_ := set $env "VOICEMON_JWT_JWKS_URL" . }}{{ end -}}
{{- range $name, $value := $v.extraEnv }}{{ $_ := set $env $name (toString $value) }}{{ end -}}
{{- range $name := keys $env | sortAlpha }}
- name: {{ $name }}
  value: {{ index $env $name | quote }}
{{- end }}
{{- end -}}

{{/* envFrom: the Secret of the secret settings. */}}
{{- define "voicemon.envFrom" -}}
- secretRef:
    name: {{ include "voicemon.secretName" . }}
{{- end -}}

{{/* The Kafka TLS files, when a Secret holds them. */}}
{{- define "voicemon.kafkaTlsVolume" -}}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "voicemon.kafkaTlsMount" -}}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  mountPath: /etc/voicemon/kafka
  readOnly: true
{{- end }}
{{- end -}}
