#!/bin/sh
# Run maskwatch with its broker login read from a make-users credentials file.
#   CREDENTIALS_FILE=/secrets/credentials/hub.env maskwatch-entrypoint hub ...
# The file sets MASKWATCH_BROKER__USERNAME and MASKWATCH_BROKER__PASSWORD; the password
# never appears on a command line or in the compose file.
set -eu
if [ -n "${CREDENTIALS_FILE:-}" ]; then
    if [ ! -r "$CREDENTIALS_FILE" ]; then
        echo "maskwatch-entrypoint: cannot read $CREDENTIALS_FILE (run make-users first)" >&2
        exit 2
    fi
    set -a
    . "$CREDENTIALS_FILE"
    set +a
fi
exec maskwatch "$@"
