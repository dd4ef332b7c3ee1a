#!/usr/bin/env bash
# Development certificates for secure mode: a CA, one server certificate for every worker
# (SAN: localhost, 127.0.0.1 and the compose/Kubernetes service names) and a client certificate for
# the gateway (mTLS). Usage: scripts/certs.sh [DIR] (default .run/certs). Not for production.
set -euo pipefail
dir=${1:-.run/certs}
mkdir -p "$dir"
cd "$dir"
days=365
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$days" -subj "/CN=torchgate-dev-ca" 2>/dev/null
names="DNS:localhost,IP:127.0.0.1"
for service in gpu embedding reranking classifier; do
  names="$names,DNS:$service,DNS:$service.torchgate.svc.cluster.local"
done
issue() {  # name, subject, extensions
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days "$days" \
    -extfile <(printf '%s\n' "$3") 2>/dev/null
  rm -f "$1.csr"
}
issue server torchgate-worker "subjectAltName=$names
extendedKeyUsage=serverAuth"
issue client torchgate-gateway "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
echo "certificates in $dir: ca.crt, server.crt/key (workers), client.crt/key (gateway)"
