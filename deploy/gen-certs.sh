#!/usr/bin/env bash
# Writes what a secured topkd cluster needs into DIR (default deploy/secrets):
#   ca.pem, ca-key.pem       the cluster CA (keep ca-key.pem offline in production)
#   node.pem, node-key.pem   a node certificate: DNS node.topkd (what nodes check each other for),
#                            plus the names and IPs clients dial (NAMES, default n1 n2 n3 localhost 127.0.0.1)
#   client.pem, client-key.pem  a client certificate (optional for clients; never a node's)
#   gossip.key               the gossip encryption key
#   tokens                   the nodes' --token-file: one admin, one write, one read token (digests only)
#   admin.token, write.token, read.token  the tokens themselves, for topkctl --token-file
# Usage: deploy/gen-certs.sh [DIR] [NAMES...]
set -euo pipefail
dir=${1:-deploy/secrets}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(n1 n2 n3 localhost 127.0.0.1)
mkdir -p "$dir"
cd "$dir"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=topkd cluster CA" -keyout ca-key.pem -out ca.pem 2>/dev/null

san="DNS:node.topkd"
for n in "${names[@]}"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
done
issue() { # name subject-alt-names
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n' "$2") \
    -out "$1.pem" 2>/dev/null
  rm "$1.csr"
}
issue node "$san"
issue client "DNS:client.topkd"

openssl rand -base64 32 > gossip.key

: > tokens
for role in admin write read; do
  tok="tkd_$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')"
  printf '%s' "$tok" > "$role.token"
  printf '%s %s %s\n' "$role" "$(printf '%s' "$tok" | openssl dgst -sha256 -r | cut -d' ' -f1)" "$role-user" >> tokens
done
chmod 0644 ca.pem node.pem client.pem
echo "wrote the CA, node and client certificates, gossip.key, tokens and admin/write/read.token to $PWD"
