{{/* The release's name prefix of every object. */}}
{{- define "weir.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "weir.labels" -}}
app.kubernetes.io/name: weir
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "weir.selector" -}}
app.kubernetes.io/name: weir
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "weir.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The cluster id: replica pods carry it as a label; unique per release and namespace. */}}
{{- define "weir.clusterId" -}}
{{- printf "%s-%s" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "weir.tokenSecret" -}}
{{- .Values.token.existingSecret | default (printf "%s-token" (include "weir.fullname" .)) -}}
{{- end -}}

{{- define "weir.etcdEndpoints" -}}
{{- if .Values.etcd.external.endpoints -}}
{{- .Values.etcd.external.endpoints -}}
{{- else -}}
{{- $name := printf "%s-etcd" (include "weir.fullname" .) -}}
{{- $parts := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $parts = append $parts (printf "%s-%d.%s.%s.svc:2379" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}
{{- end -}}

{{/* The env every Weir process shares: its pod IP, etcd, the token, etcd's TLS files. */}}
{{- define "weir.env" -}}
- name: WEIR_POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: WEIR_ETCD_ENDPOINTS
  value: {{ include "weir.etcdEndpoints" . | quote }}
- name: WEIR_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "weir.tokenSecret" . }}
      key: {{ .Values.token.tokenKey }}
{{- if include "weir.etcdClientTlsSecret" . }}
- name: WEIR_ETCD_CA_FILE
  value: /etc/weir/etcd-tls/ca.crt
- name: WEIR_ETCD_CERT_FILE
  value: /etc/weir/etcd-tls/tls.crt
- name: WEIR_ETCD_KEY_FILE
  value: /etc/weir/etcd-tls/tls.key
{{- end }}
{{- with include "weir.etcdCredentialsSecret" . }}
- name: WEIR_ETCD_USER
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: username
- name: WEIR_ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: password
{{- end }}
{{- end -}}

{{/* The Secret of etcd client TLS files Weir's pods mount ("": no TLS): an external etcd's,
or the chart's own etcd's when its TLS is on. */}}
{{- define "weir.etcdClientTlsSecret" -}}
{{- if .Values.etcd.external.endpoints -}}
{{- .Values.etcd.external.tlsSecret -}}
{{- else if .Values.etcd.tls.enabled -}}
{{- $_ := required "etcd.tls.secret: name the Secret with the etcd members' ca.crt, tls.crt and tls.key" .Values.etcd.tls.secret -}}
{{- .Values.etcd.tls.clientSecret | default .Values.etcd.tls.secret -}}
{{- end -}}
{{- end -}}

{{/* The Secret of an external etcd's user ("": none). */}}
{{- define "weir.etcdCredentialsSecret" -}}
{{- if .Values.etcd.external.endpoints -}}
{{- .Values.etcd.external.credentialsSecret -}}
{{- end -}}
{{- end -}}

{{- define "weir.etcdTlsVolumeMounts" -}}
{{- if include "weir.etcdClientTlsSecret" . }}
volumeMounts:
  - name: etcd-tls
    mountPath: /etc/weir/etcd-tls
    readOnly: true
{{- end }}
{{- end -}}

{{- define "weir.etcdTlsVolumes" -}}
{{- with include "weir.etcdClientTlsSecret" . }}
volumes:
  - name: etcd-tls
    secret:
      secretName: {{ . }}
{{- end }}
{{- end -}}

{{- define "weir.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "weir.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: false
  capabilities:
    drop: ["ALL"]
{{- end -}}
