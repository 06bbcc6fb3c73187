{{/*
Names, labels and the choices several templates share. The defaults the chart must know itself
(the annotation prefix for the matchConditions, the legacy-token scope) are the server's, and
tests/manifests/test_chart.py checks them against the code.
*/}}

{{- define "token-projector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "token-projector.fullname" -}}
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

{{- define "token-projector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "token-projector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "token-projector.labels" -}}
{{ include "token-projector.selectorLabels" . }}
app.kubernetes.io/part-of: token-projector
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* metadata.labels and, when there are any, metadata.annotations (extra ones first). */}}
{{- define "token-projector.metadata" -}}
{{- $root := index . 0 }}
{{- $annotations := merge (dict) (index . 1) ($root.Values.commonAnnotations | default dict) -}}
labels:
  {{- include "token-projector.labels" $root | nindent 2 }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "token-projector.tlsSecretName" -}}
{{- if eq (include "token-projector.certificateMode" .) "secret" }}
{{- required "certificates.secret.name is required with certificates.mode=secret: the kubernetes.io/tls Secret (tls.crt, tls.key) in the release namespace" .Values.certificates.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "token-projector.fullname" .) }}
{{- end }}
{{- end }}

{{- define "token-projector.caName" -}}
{{- printf "%s-ca" (include "token-projector.fullname" .) }}
{{- end }}

{{/* The Service names the serving certificate must carry (as `token-projector certs` makes them). */}}
{{- define "token-projector.dnsNames" -}}
{{- $service := include "token-projector.fullname" . }}
{{- list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) | toJson }}
{{- end }}

{{- define "token-projector.annotationPrefix" -}}
{{- .Values.contract.annotationPrefix | default "token-projector.io" }}
{{- end }}

{{- define "token-projector.legacyTokenScope" -}}
{{- .Values.contract.legacyTokenScope | default "annotated" }}
{{- end }}

{{/*
cert-manager, helm or secret. auto keeps Helm-generated certificates a release already has (so
installing cert-manager later does not swap the CA under a running webhook), else uses cert-manager
when the cluster serves its API, else helm.
*/}}
{{- define "token-projector.certificateMode" -}}
{{- $mode := .Values.certificates.mode }}
{{- if ne $mode "auto" }}
{{- $mode }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-tls" (include "token-projector.fullname" .)) }}
{{- $madeBy := dig "metadata" "annotations" "token-projector.io/certificates" "" ($existing | default dict) }}
{{- if eq $madeBy "helm" }}helm
{{- else if .Capabilities.APIVersions.Has "cert-manager.io/v1" }}cert-manager
{{- else }}helm
{{- end }}
{{- end }}
{{- end }}

{{/*
Helm-generated TLS material, made once per render and kept in the root context so that the Secrets
and the webhook's caBundle are the same certificates. The CA and the serving certificate of the
release's existing Secrets are reused (on `helm upgrade`; `helm template` has no cluster, so it makes
new ones every time). The serving certificate is made again, from the same CA, when the Service names
changed or it expires within renewBeforeDays.
*/}}
{{- define "token-projector.helmTLS" -}}
{{- if not (hasKey . "tokenProjectorTLS") }}
{{- $helm := .Values.certificates.helm }}
{{- $fullname := include "token-projector.fullname" . }}
{{- $dnsNames := include "token-projector.dnsNames" . | fromJsonArray }}
{{- $caSecret := lookup "v1" "Secret" .Release.Namespace (include "token-projector.caName" .) | default dict }}
{{- $tlsSecret := lookup "v1" "Secret" .Release.Namespace (printf "%s-tls" $fullname) | default dict }}
{{- $caData := $caSecret.data | default dict }}
{{- $tlsData := $tlsSecret.data | default dict }}
{{- $tls := dict }}
{{- if and (index $caData "tls.crt") (index $caData "tls.key") }}
{{- $_ := set $tls "caCert" (index $caData "tls.crt" | b64dec) }}
{{- $_ := set $tls "caKey" (index $caData "tls.key" | b64dec) }}
{{- $_ := set $tls "caReused" true }}
{{- else }}
{{- $ca := genCAWithKey "token-projector CA" (int $helm.caValidityDays) (genPrivateKey "ecdsa") }}
{{- $_ := set $tls "caCert" $ca.Cert }}
{{- $_ := set $tls "caKey" $ca.Key }}
{{- $_ := set $tls "caReused" false }}
{{- end }}
{{- $annotations := dig "metadata" "annotations" dict $tlsSecret }}
{{- $notAfter := index $annotations "token-projector.io/not-after" | default "0" | atoi }}
{{- $renewAt := add (now | unixEpoch | atoi) (mul (int $helm.renewBeforeDays) 86400) }}
{{- $sameNames := eq (index $annotations "token-projector.io/dns-names" | default "") (join "," $dnsNames) }}
{{- $sameCA := eq (index $tlsData "ca.crt" | default "" | b64dec) $tls.caCert }}
{{- if and $tls.caReused $sameNames $sameCA (gt $notAfter $renewAt) (index $tlsData "tls.crt") (index $tlsData "tls.key") }}
{{- $_ := set $tls "cert" (index $tlsData "tls.crt" | b64dec) }}
{{- $_ := set $tls "key" (index $tlsData "tls.key" | b64dec) }}
{{- $_ := set $tls "notAfter" (toString $notAfter) }}
{{- else }}
{{- $ca := buildCustomCert ($tls.caCert | b64enc) ($tls.caKey | b64enc) }}
{{- $cn := printf "%s.%s.svc" $fullname .Release.Namespace }}
{{- $serving := genSignedCertWithKey $cn nil $dnsNames (int $helm.validityDays) $ca (genPrivateKey "ecdsa") }}
{{- /* The CA is appended, as `token-projector certs` does: clients that know only the root still build the chain. */}}
{{- $_ := set $tls "cert" (printf "%s%s" $serving.Cert $tls.caCert) }}
{{- $_ := set $tls "key" $serving.Key }}
{{- $_ := set $tls "notAfter" (toString (add (now | unixEpoch | atoi) (mul (int $helm.validityDays) 86400))) }}
{{- end }}
{{- $_ := set $tls "dnsNames" (join "," $dnsNames) }}
{{- $_ := set . "tokenProjectorTLS" $tls }}
{{- end }}
{{- end }}

{{/* The webhook's caBundle (base64 PEM), or nothing when cainjector fills it in. */}}
{{- define "token-projector.caBundle" -}}
{{- $mode := include "token-projector.certificateMode" . }}
{{- if eq $mode "helm" }}
{{- $_ := include "token-projector.helmTLS" . }}
{{- .tokenProjectorTLS.caCert | b64enc }}
{{- else if eq $mode "secret" }}
{{- required "certificates.secret.caBundle is required with certificates.mode=secret: the base64 PEM of the CA that signed the Secret's certificate (`token-projector certs` prints it)" .Values.certificates.secret.caBundle }}
{{- end }}
{{- end }}

{{- define "token-projector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The contract settings as `token-projector serve` flags, one "--flag value" pair per set value. */}}
{{- define "token-projector.contractArgs" -}}
{{- $args := list }}
{{- $flags := dict
  "annotationPrefix" "--annotation-prefix"
  "volumeName" "--volume-name"
  "mountPath" "--mount-path"
  "tokenFile" "--token-file"
  "envVar" "--env-var"
  "dirEnvVar" "--dir-env-var"
  "defaultExpirationSeconds" "--default-expiration-seconds"
  "maxExpirationSeconds" "--max-expiration-seconds"
  "deniedAudiences" "--denied-audiences"
  "allowedAudiences" "--allowed-audiences"
  "maxAudiences" "--max-audiences"
  "legacyTokenPolicy" "--legacy-token-policy"
  "legacyTokenScope" "--legacy-token-scope"
  "proxyPort" "--proxy-port"
  "proxyProbePort" "--proxy-probe-port"
}}
{{- range $key := keys $flags | sortAlpha }}
{{- $value := index $.Values.contract $key }}
{{- if kindIs "slice" $value }}
{{- $args = concat $args (list (index $flags $key) (join "," $value)) }}
{{- else if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
{{- /* Numbers from a values file arrive as float64; %v would write 1000000 as 1e+06. */}}
{{- $args = concat $args (list (index $flags $key) (int64 $value | toString)) }}
{{- else if not (kindIs "invalid" $value) }}
{{- $args = concat $args (list (index $flags $key) (toString $value)) }}
{{- end }}
{{- end }}
{{- if eq (toString .Values.contract.strict) "true" }}
{{- $args = append $args "--strict" }}
{{- else if eq (toString .Values.contract.strict) "false" }}
{{- $args = append $args "--no-strict" }}
{{- end }}
{{- /* The verifying proxy's image: by default the image this release runs (the webhook's own image carries
the proxy); passed only when it is not the server's default, token-projector:APPVERSION. */}}
{{- $proxyImage := .Values.contract.proxyImage | default (include "token-projector.image" .) }}
{{- if ne $proxyImage (printf "token-projector:%s" .Chart.AppVersion) }}
{{- $args = concat $args (list "--proxy-image" $proxyImage) }}
{{- end }}
{{- /* Native sidecars (the proxy's form) are on by default from Kubernetes 1.29: null decides by the cluster. */}}
{{- $kube := .Capabilities.KubeVersion }}
{{- if eq (toString .Values.contract.nativeSidecars) "true" }}
{{- $args = append $args "--native-sidecars" }}
{{- else if or (eq (toString .Values.contract.nativeSidecars) "false") (and (eq $kube.Major "1") (lt (trimSuffix "+" $kube.Minor | atoi) 29)) }}
{{- $args = append $args "--no-native-sidecars" }}
{{- end }}
{{- toJson $args }}
{{- end }}
