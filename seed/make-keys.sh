#!/usr/bin/env bash
# Make example RSA keys with stock OpenSSL, in both PEM formats signwave imports:
#   seed/make-keys.sh DIR && signwave keys import DIR/*.pem
set -euo pipefail
dir=${1:-keys}
mkdir -p "$dir"
chmod 700 "$dir"
openssl genrsa -out "$dir/pkcs8-2048.pem" 2048 2>/dev/null              # BEGIN PRIVATE KEY
openssl genrsa -traditional -out "$dir/pkcs1-3072.pem" 3072 2>/dev/null # BEGIN RSA PRIVATE KEY
echo "wrote $dir/pkcs8-2048.pem and $dir/pkcs1-3072.pem"
