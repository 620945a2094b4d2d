#!/bin/sh
# A sample contributor for docker/compose.yaml: gets a contributor token with the operator's admin token
# (a real site is given its token by the operator instead), then takes part in ROUNDS rounds with
# `coldfuse run` on its own labelled file.
# Env: COLDFUSE_COORDINATOR, ADMIN_TOKEN_FILE, CONTRIBUTOR, DATA, ROUNDS, EXTRA (more `coldfuse run` flags),
# COLDFUSE_CA_CERT (the coordinator's private CA; `coldfuse` reads it from the environment too).
set -eu
: "${COLDFUSE_COORDINATOR:?}" "${ADMIN_TOKEN_FILE:?}" "${CONTRIBUTOR:?}" "${DATA:?}"
token_file="$HOME/token"
if [ ! -s "$token_file" ]; then
  curl -fsS ${COLDFUSE_CA_CERT:+--cacert "$COLDFUSE_CA_CERT"} -X POST "$COLDFUSE_COORDINATOR/v1/admin/tokens" \
    -H "Authorization: Bearer $(cat "$ADMIN_TOKEN_FILE")" -H 'Content-Type: application/json' \
    -d "{\"role\":\"contributor\",\"contributor\":\"$CONTRIBUTOR\"}" \
    | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' > "$token_file"
fi
test -s "$token_file" || { echo "no contributor token from $COLDFUSE_COORDINATOR" >&2; exit 1; }
coldfuse login --token "$(cat "$token_file")"
# shellcheck disable=SC2086 # EXTRA is a list of flags
exec coldfuse run --rounds "${ROUNDS:-3}" --data "$DATA" $EXTRA
