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
- --config=/etc/config/ip-masq-agent
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
