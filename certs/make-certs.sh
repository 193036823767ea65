#!/usr/bin/env bash
# Makes a CA and a serving certificate for wva-metrics-server with the SANs the aggregator verifies
# (<svc>, <svc>.<ns>, <svc>.<ns>.svc, <svc>.<ns>.svc.cluster.local), then prints the caBundle.
#
#   certs/make-certs.sh [OUT_DIR]                       # files only
#   certs/make-certs.sh OUT_DIR --apply                 # also: Secret wva-metrics-server-tls + APIService with caBundle
#
# Env: SERVICE (wva-metrics-server), NAMESPACE (wva-metrics-server), DAYS (365), KUBECTL (kubectl),
#      EXTRA_SANS (comma-separated extra DNS names or IPs, e.g. 127.0.0.1 for tests).
set -euo pipefail
out="${1:-./wva-certs}"
apply="${2:-}"
svc="${SERVICE:-wva-metrics-server}"
ns="${NAMESPACE:-wva-metrics-server}"
days="${DAYS:-365}"
kubectl="${KUBECTL:-kubectl}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"

sans="DNS:${svc},DNS:${svc}.${ns},DNS:${svc}.${ns}.svc,DNS:${svc}.${ns}.svc.cluster.local"
IFS=',' read -ra extra <<< "${EXTRA_SANS:-}"
for s in "${extra[@]}"; do
  [[ -z "$s" ]] && continue
  if [[ "$s" =~ ^[0-9.]+$ || "$s" == *:* ]]; then sans="$sans,IP:$s"; else sans="$sans,DNS:$s"; fi
done

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=${svc}-ca" \
  -keyout "$out/ca.key" -out "$out/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=${svc}.${ns}.svc" -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial -days "$days" -out "$out/tls.crt" \
  -extfile <(printf "subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n" "$sans") 2>/dev/null
rm -f "$out/tls.csr" "$out/ca.srl"
chmod 600 "$out/ca.key" "$out/tls.key"
ca_bundle="$(base64 < "$out/ca.crt" | tr -d '\n')"
sed "s|CA_BUNDLE|${ca_bundle}|" "$here/../apiservice/apiservice.yaml" > "$out/apiservice.yaml"

echo "wrote $out/ca.crt, $out/tls.crt, $out/tls.key (SANs: $sans) and $out/apiservice.yaml" >&2
if [[ "$apply" == "--apply" ]]; then
  "$kubectl" -n "$ns" create secret tls wva-metrics-server-tls --cert="$out/tls.crt" --key="$out/tls.key" \
    --dry-run=client -o yaml | "$kubectl" apply -f - >&2
  "$kubectl" apply -f "$out/apiservice.yaml" >&2
fi
echo "$ca_bundle"
