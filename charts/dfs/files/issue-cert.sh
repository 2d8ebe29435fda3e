#!/bin/sh
# Issues this pod's certificate, signed by the cluster CA, into an in-memory volume. It runs
# as an init container so that the CA's key is mounted into that container only, never into
# the long-running one, and so that a certificate can name what helm's own functions cannot:
# the role and ID claims dfs reads from URI subject alternative names
# (`urn:dfs:role:ROLE`, `urn:dfs:id:ID`; docs/security.md). The key is made here and never
# leaves the pod. The same settings as cli/certs.ts: EC P-256, SHA-256, random serial.
#
# Environment: ROLE (node, proxy, admin; or redis, which carries no dfs claims), ID, HOSTS
# (comma-separated DNS names the server answers to), DAYS, CA_DIR (ca.crt and ca.key),
# OUT_DIR (written: ca.crt, tls.crt, tls.key), POD_IP (optional, also put in the names).
set -eu
umask 077
: "${ROLE:?ROLE is required}" "${ID:?ID is required}" "${CA_DIR:?CA_DIR is required}" "${OUT_DIR:?OUT_DIR is required}"
days=${DAYS:-825}
san="DNS:localhost,IP:127.0.0.1"
for host in $(printf '%s' "${HOSTS:-}" | tr ',' ' '); do san="$san,DNS:$host"; done
if [ -n "${POD_IP:-}" ]; then san="$san,IP:$POD_IP"; fi
if [ "$ROLE" != redis ]; then san="URI:urn:dfs:role:$ROLE,URI:urn:dfs:id:$ID,$san"; fi
csr="$OUT_DIR/tls.csr"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$OUT_DIR/tls.key" -out "$csr" -subj "/CN=$ROLE $ID" \
  -addext "subjectAltName=$san" -addext "basicConstraints=critical,CA:FALSE" \
  -addext "keyUsage=critical,digitalSignature" -addext "extendedKeyUsage=serverAuth,clientAuth" 2>/dev/null
openssl x509 -req -in "$csr" -CA "$CA_DIR/ca.crt" -CAkey "$CA_DIR/ca.key" -days "$days" \
  -sha256 -copy_extensions copyall -out "$OUT_DIR/tls.crt" 2>/dev/null
rm -f "$csr"
cp "$CA_DIR/ca.crt" "$OUT_DIR/ca.crt"
# The same files under the names $DFS_CREDENTIAL=DIR/NAME expects (DIR/NAME.crt, .key).
ln -sf tls.crt "$OUT_DIR/$ROLE.crt"
ln -sf tls.key "$OUT_DIR/$ROLE.key"
echo "issued a $ROLE certificate for $ID: $(openssl x509 -in "$OUT_DIR/tls.crt" -noout -enddate)"
