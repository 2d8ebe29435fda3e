{{/*
Names, labels and the pieces every dfs pod shares. Selectors use only name, instance and
component: labels that change with an upgrade (version, chart) must never be in a selector
or a volumeClaimTemplate, or the upgrade is refused (selectors are immutable).
*/}}

{{- define "dfs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dfs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dfs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object: takes (dict "ctx" $ "component" "storage"). */}}
{{- define "dfs.labels" -}}
helm.sh/chart: {{ include "dfs.chart" .ctx }}
{{ include "dfs.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: dfs
{{- end -}}

{{/* Selector labels: name, instance, component and nothing else. */}}
{{- define "dfs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dfs.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dfs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "dfs.storageName" -}}{{ include "dfs.fullname" . }}-storage{{- end -}}
{{- define "dfs.proxyName" -}}{{ include "dfs.fullname" . }}-proxy{{- end -}}
{{- define "dfs.redisName" -}}{{ include "dfs.fullname" . }}-redis{{- end -}}
{{- define "dfs.caSecret" -}}{{ default (printf "%s-ca" (include "dfs.fullname" .)) .Values.tls.existingCaSecret }}{{- end -}}
{{- define "dfs.redisAuthSecret" -}}{{ include "dfs.fullname" . }}-redis-auth{{- end -}}

{{/* The DNS suffix of a Service in this namespace: .NS.svc.DOMAIN */}}
{{- define "dfs.svcSuffix" -}}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}{{- end -}}

{{/* All the names a Service answers to, comma-separated, for a certificate. */}}
{{- define "dfs.serviceHosts" -}}
{{- $svc := .svc -}}{{- $ns := .ctx.Release.Namespace -}}
{{- printf "%s,%s.%s,%s.%s.svc,%s.%s.svc.%s" $svc $svc $ns $svc $ns $svc $ns .ctx.Values.clusterDomain -}}
{{- end -}}

{{- define "dfs.redisUrl" -}}
{{- if .Values.redis.externalUrl -}}
{{- .Values.redis.externalUrl -}}
{{- else -}}
{{- printf "rediss://%s%s:%d" (include "dfs.redisName" .) (include "dfs.svcSuffix" .) (int .Values.redis.port) -}}
{{- end -}}
{{- end -}}

{{- define "dfs.proxyUrl" -}}
{{- printf "https://%s%s:%d" (include "dfs.proxyName" .) (include "dfs.svcSuffix" .) (int .Values.proxy.port) -}}
{{- end -}}

{{/*
The init container that issues the pod's certificate (files/issue-cert.sh) into the
in-memory volume `tls`. Takes (dict "ctx" $ "role" "node" "id" "$(POD_NAME)" "hosts" "a,b" ["user" UID]):
UID, when given, is the user the certificate's files belong to (Redis runs as its own).
*/}}
{{- define "dfs.certInitContainer" -}}
- name: issue-cert
  image: {{ include "dfs.image" .ctx }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  command: ["/bin/sh", "/etc/dfs/scripts/issue-cert.sh"]
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: ROLE
      value: {{ .role | quote }}
    - name: ID
      value: {{ .id | quote }}
    - name: HOSTS
      value: {{ .hosts | quote }}
    - name: DAYS
      value: {{ .ctx.Values.tls.certDays | quote }}
    - name: CA_DIR
      value: /etc/dfs/ca
    - name: OUT_DIR
      value: /etc/dfs/tls
  securityContext:
    {{- if .user }}
    {{- toYaml (merge (dict "runAsUser" .user "runAsGroup" .user) (deepCopy .ctx.Values.securityContext)) | nindent 4 }}
    {{- else }}
    {{- toYaml .ctx.Values.securityContext | nindent 4 }}
    {{- end }}
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      memory: 64Mi
  volumeMounts:
    - name: ca
      mountPath: /etc/dfs/ca
      readOnly: true
    - name: tls
      mountPath: /etc/dfs/tls
    - name: scripts
      mountPath: /etc/dfs/scripts
      readOnly: true
{{- end -}}

{{/* The volumes the certificate's init container uses. */}}
{{- define "dfs.certVolumes" -}}
- name: ca
  secret:
    secretName: {{ include "dfs.caSecret" . }}
    defaultMode: 0444
- name: tls
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: scripts
  configMap:
    name: {{ include "dfs.fullname" . }}-scripts
    defaultMode: 0555
{{- end -}}

{{/* The Redis login of a role, mounted as one file (DFS_REDIS_AUTH names it). */}}
{{- define "dfs.redisAuthVolume" -}}
- name: redis-auth
  secret:
    secretName: {{ include "dfs.redisAuthSecret" .ctx }}
    defaultMode: 0444
    items:
      - key: {{ .role }}.json
        path: {{ .role }}.json
{{- end -}}

{{/* Pod anti-affinity by host: hard, soft or none. Takes (dict "ctx" $ "component" "storage" "mode" "hard"). */}}
{{- define "dfs.antiAffinity" -}}
{{- if eq .mode "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "dfs.selectorLabels" . | nindent 12 }}
{{- else if eq .mode "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "dfs.selectorLabels" . | nindent 14 }}
{{- end }}
{{- end -}}


{{/* What the `dfs` command needs to act as admin on this cluster (admin pod, helm test). */}}
{{- define "dfs.adminEnv" -}}
- name: DFS_PROXY
  value: {{ include "dfs.proxyUrl" . }}
- name: DFS_REDIS
  value: {{ include "dfs.redisUrl" . }}
- name: DFS_CREDENTIAL
  value: /etc/dfs/tls/admin
- name: DFS_REDIS_AUTH
  value: /etc/dfs/redis/admin.json
{{- end -}}

{{/* A NetworkPolicy peer: the pods of one component of this release. */}}
{{- define "dfs.peer" -}}
- podSelector:
    matchLabels:
      {{- include "dfs.selectorLabels" . | nindent 6 }}
{{- end -}}
