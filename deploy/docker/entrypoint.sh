#!/bin/sh
# Run maskwatch with its broker login read from a make-users credentials file.
#   MASKWATCH_CREDENTIALS=/secrets/credentials/hub.env maskwatch-entrypoint hub ...
# The file sets MASKWATCH_BROKER__USERNAME and MASKWATCH_BROKER__PASSWORD; the password
# never appears on a command line or in the compose file.
set -eu
if [ -n "${MASKWATCH_CREDENTIALS:-}" ]; then
    if [ ! -r "$MASKWATCH_CREDENTIALS" ]; then
        echo "maskwatch-entrypoint: cannot read $MASKWATCH_CREDENTIALS (run make-users first)" >&2
        exit 2
    fi
    set -a
    . "$MASKWATCH_CREDENTIALS"
    set +a
fi
exec maskwatch "$@"
