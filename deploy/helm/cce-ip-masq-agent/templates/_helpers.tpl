{{/* The name of the ConfigMap and the DaemonSet. */}}
{{- define "masqd.fullname" -}}
{{- .Values.fullnameOverride | default "cce-ip-masq-agent" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the DaemonSet's pods; never change them (selectors are immutable). */}}
{{- define "masqd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "masqd.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "masqd.labels" -}}
{{ include "masqd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: masqd
{{- end -}}

{{/* The image: CCE's CNIMasqAgentImage when set, else image.repository:image.tag. */}}
{{- define "masqd.image" -}}
{{- if .Values.CNIMasqAgentImage -}}
{{- .Values.CNIMasqAgentImage -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* masqd's command line. */}}
{{- define "masqd.args" -}}
{{- $m := .Values.masqd -}}
{{- if .Values.extraConfigMaps -}}
- --config-dir=/etc/config
{{- else -}}
- --config=/etc/config/ip-masq-agent
{{- end }}
- --socket=/run/masqd/masqd.sock
- --backend={{ $m.backend }}
- --iptables-mode={{ $m.iptablesMode }}
- --masq-chain={{ $m.masqChain }}
- --nft-table={{ $m.nftTable }}
- --enable-ipv6={{ $m.enableIPv6 }}
{{- if $m.nomasqAllReservedRanges }}
- --nomasq-all-reserved-ranges
{{- end }}
{{- if $m.randomFully }}
- --random-fully
{{- end }}
{{- with $m.toPorts }}
- --to-ports={{ . }}
{{- end }}
- --metrics-address={{ $m.metricsAddress }}
- --log-format={{ $m.logFormat }}
- --log-level={{ $m.logLevel }}
{{- range $m.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
masq-cni's installer command line, shared by the one-shot init container and the watch.
*/}}
{{- define "masqd.cniInstall" -}}
- masq-cni
- install
- --bin-dir=/host{{ .Values.cni.binDir }}
- --conf-dir=/host{{ .Values.cni.confDir }}
- --host-root=/host
{{- end }}

{{/*
What a masq-cni installer container needs: the host's root read-only, its CNI directories
writable on top, and of all capabilities only SYS_CHROOT (to run the plugin in the host root).
*/}}
{{- define "masqd.cniContainer" -}}
resources:
  {{- toYaml .Values.cni.resources | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
    add: [SYS_CHROOT]
volumeMounts:
  - name: host-root
    mountPath: /host
    readOnly: true
  - name: cni-bin
    mountPath: /host{{ .Values.cni.binDir }}
  - name: cni-conf
    mountPath: /host{{ .Values.cni.confDir }}
{{- end }}
