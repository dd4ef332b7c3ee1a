#!/usr/bin/env bash
# Development certificates for secure mode: a CA, one server certificate for every worker
# (SAN: localhost, 127.0.0.1 and the compose/Kubernetes service names) and a client certificate for
# the gateway (mTLS). Not for production.
# Usage: scripts/certs.sh [--rotate] [DIR]   (DIR defaults to .run/certs)
#   --rotate  new server and client leaves (new keys, new serials) from the CA already in DIR, each file
#             replaced by a rename: running processes serve the new ones to new connections, no restart.
# TORCHGATE_CERT_DAYS sets the leaves' lifetime (default 365 days).
set -euo pipefail
rotate=0
if [ "${1:-}" = "--rotate" ]; then rotate=1; shift; fi
dir=${1:-.run/certs}
days=${TORCHGATE_CERT_DAYS:-365}
mkdir -p "$dir"
cd "$dir"
if ((rotate)); then
  [ -s ca.crt ] && [ -s ca.key ] || { echo "--rotate needs the CA (ca.crt, ca.key) in $dir" >&2; exit 2; }
else
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=torchgate-dev-ca" 2>/dev/null
fi
names="DNS:localhost,IP:127.0.0.1"
for service in gpu embedding reranking classifier documents; do
  names="$names,DNS:$service,DNS:$service.torchgate.svc.cluster.local"
done
issue() {  # name, subject, extensions: written beside, then renamed over the old files (key first)
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key.new" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
    -out "$1.crt.new" -days "$days" -extfile <(printf '%s\n' "$3") 2>/dev/null
  chmod 600 "$1.key.new"
  rm -f "$1.csr"
  mv -f "$1.key.new" "$1.key"
  mv -f "$1.crt.new" "$1.crt"
}
issue server torchgate-worker "subjectAltName=$names
extendedKeyUsage=serverAuth"
issue client torchgate-gateway "extendedKeyUsage=clientAuth"
chmod 600 ca.key
if ((rotate)); then
  echo "rotated in $dir: server.crt serial $(openssl x509 -in server.crt -noout -serial | cut -d= -f2)," \
    "client.crt serial $(openssl x509 -in client.crt -noout -serial | cut -d= -f2)"
else
  echo "certificates in $dir: ca.crt, server.crt/key (workers), client.crt/key (gateway)"
fi
