#!/usr/bin/env bash
# Makes a throwaway certificate authority, a server certificate and a client certificate for
# trying Starling's TLS listeners. NOT for production: the keys are unencrypted and the CA's key
# sits next to its certificate.
#
#   certs/make-test-certs.sh [OUT_DIR] [CLIENT_CN]
#
# OUT_DIR defaults to the directory of this script; CLIENT_CN (the client certificate's Common
# Name, the username `use_identity_as_username` gives it) defaults to "device-1". Writes:
#   ca.crt ca.key                 the CA (10 years)
#   server.crt server.key         for 127.0.0.1 and localhost, signed by the CA (1 year)
#   client.crt client.key         CN=CLIENT_CN, for client authentication, signed by the CA
# Existing files are replaced. Needs openssl 1.1.1 or later.
set -euo pipefail

out=${1:-"$(dirname "${BASH_SOURCE[0]}")"}
client_cn=${2:-device-1}
mkdir -p "$out"
cd "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout ca.key -out ca.crt -subj "/O=Starling test/CN=Starling test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# Issues NAME.crt/NAME.key for SUBJECT with the extensions in EXTFILE.
issue() {
    local name=$1 subject=$2 extfile=$3
    openssl req -new -newkey rsa:2048 -nodes -sha256 \
        -keyout "$name.key" -out "$work/$name.csr" -subj "$subject" 2>/dev/null
    openssl x509 -req -in "$work/$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -CAserial "$work/ca.srl" -days 365 -sha256 -extfile "$extfile" -out "$name.crt" 2>/dev/null
}

cat >"$work/server.ext" <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EXT
issue server "/O=Starling test/CN=localhost" "$work/server.ext"

cat >"$work/client.ext" <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
issue client "/O=Starling test/CN=$client_cn" "$work/client.ext"

chmod 600 ca.key server.key client.key
openssl verify -CAfile ca.crt server.crt client.crt
echo "made ca.crt, server.crt/.key and client.crt/.key (CN=$client_cn) in $(pwd)"
