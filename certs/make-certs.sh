#!/usr/bin/env bash
# Makes a CA and a serving certificate for wva-metrics-server with the SANs the aggregator verifies
# (<svc>, <svc>.<ns>, <svc>.<ns>.svc, <svc>.<ns>.svc.cluster.local), then prints the caBundle.
#
# Also issues KEDA's client certificate for the external scaler port (keda-client.crt/.key, same CA) and
# writes keda-trigger-auth.yaml: the Secret and TriggerAuthentication a ScaledObject's `external` trigger
# uses (caCert, tlsClientCert, tlsClientKey), for the namespace TRIGGER_NAMESPACE.
#
#   certs/make-certs.sh [OUT_DIR]                       # files only
#   certs/make-certs.sh OUT_DIR --apply                 # also: Secret wva-metrics-server-tls (tls.crt, tls.key,
#                                                       # ca.crt) + APIService with caBundle
#   certs/make-certs.sh OUT_DIR --apply --force         # replace an APIService that points at another service
#                                                       # (Prometheus Adapter, KEDA): refused without --force
#
# Env: SERVICE (wva-metrics-server), NAMESPACE (wva-metrics-server), DAYS (365), KUBECTL (kubectl),
#      EXTRA_SANS (comma-separated extra DNS names or IPs, e.g. 127.0.0.1 for tests),
#      TRIGGER_NAMESPACE (default: the namespace of your ScaledObjects, "default" if unset).
set -euo pipefail
out="./wva-certs"
apply=""
force=""
for arg in "$@"; do
  case "$arg" in
    --apply) apply="--apply" ;;
    --force) force="--force" ;;
    -*) echo "make-certs.sh: unknown option $arg (expected --apply, --force)" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
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
openssl req -newkey rsa:2048 -nodes -subj "/CN=keda-operator" -keyout "$out/keda-client.key" -out "$out/keda-client.csr" 2>/dev/null
openssl x509 -req -in "$out/keda-client.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial -days "$days" -out "$out/keda-client.crt" \
  -extfile <(printf "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n") 2>/dev/null
rm -f "$out/tls.csr" "$out/keda-client.csr" "$out/ca.srl"
chmod 600 "$out/ca.key" "$out/tls.key" "$out/keda-client.key"
trigger_ns="${TRIGGER_NAMESPACE:-default}"
b64() { base64 < "$1" | tr -d '\n'; }
cat > "$out/keda-trigger-auth.yaml" <<YAML
# For ScaledObjects in namespace ${trigger_ns} whose external trigger points at ${svc}.${ns}.svc:9443.
apiVersion: v1
kind: Secret
metadata: {name: wva-metrics-server-keda-client, namespace: ${trigger_ns}}
type: Opaque
data:
  caCert: $(b64 "$out/ca.crt")
  tlsClientCert: $(b64 "$out/keda-client.crt")
  tlsClientKey: $(b64 "$out/keda-client.key")
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: wva-metrics-server, namespace: ${trigger_ns}}
spec:
  secretTargetRef:
    - {parameter: caCert, name: wva-metrics-server-keda-client, key: caCert}
    - {parameter: tlsClientCert, name: wva-metrics-server-keda-client, key: tlsClientCert}
    - {parameter: tlsClientKey, name: wva-metrics-server-keda-client, key: tlsClientKey}
YAML
chmod 600 "$out/keda-trigger-auth.yaml"
ca_bundle="$(base64 < "$out/ca.crt" | tr -d '\n')"
sed "s|CA_BUNDLE|${ca_bundle}|" "$here/../apiservice/apiservice.yaml" > "$out/apiservice.yaml"

echo "wrote $out/ca.crt, $out/tls.crt, $out/tls.key (SANs: $sans), $out/apiservice.yaml," >&2
echo "      $out/keda-client.crt, $out/keda-client.key and $out/keda-trigger-auth.yaml (kubectl apply -f it for KEDA)" >&2
if [[ "$apply" == "--apply" ]]; then
  # Only one provider can hold the external metrics API: never take it from another one silently.
  current="$("$kubectl" get apiservice v1beta1.external.metrics.k8s.io \
    -o 'jsonpath={.spec.service.namespace}/{.spec.service.name}' 2>/dev/null || true)"
  if [[ -n "$current" && "$current" != "${ns}/${svc}" && -z "$force" ]]; then
    echo "make-certs.sh: APIService v1beta1.external.metrics.k8s.io points at service $current now, not ${ns}/${svc}." >&2
    echo "  Another provider (Prometheus Adapter, KEDA) holds the external metrics API; replacing it breaks its users." >&2
    echo "  With KEDA, keep it and use the external scaler instead (README: KEDA). To replace it anyway: add --force." >&2
    exit 1
  fi
  "$kubectl" -n "$ns" create secret generic wva-metrics-server-tls --type=kubernetes.io/tls \
    --from-file=tls.crt="$out/tls.crt" --from-file=tls.key="$out/tls.key" --from-file=ca.crt="$out/ca.crt" \
    --dry-run=client -o yaml | "$kubectl" apply -f - >&2
  "$kubectl" apply -f "$out/apiservice.yaml" >&2
fi
echo "$ca_bundle"
