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
{{- if .Values.etcd.external.tlsSecret }}
- name: WEIR_ETCD_CA_FILE
  value: /etc/weir/etcd-tls/ca.crt
- name: WEIR_ETCD_CERT_FILE
  value: /etc/weir/etcd-tls/tls.crt
- name: WEIR_ETCD_KEY_FILE
  value: /etc/weir/etcd-tls/tls.key
{{- end }}
{{- end -}}

{{- define "weir.etcdTlsVolumeMounts" -}}
{{- if .Values.etcd.external.tlsSecret }}
volumeMounts:
  - name: etcd-tls
    mountPath: /etc/weir/etcd-tls
    readOnly: true
{{- end }}
{{- end -}}

{{- define "weir.etcdTlsVolumes" -}}
{{- if .Values.etcd.external.tlsSecret }}
volumes:
  - name: etcd-tls
    secret:
      secretName: {{ .Values.etcd.external.tlsSecret }}
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
