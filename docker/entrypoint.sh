#!/bin/sh
# Container start (run under tini): make the data directory usable, make sure both listeners have
# an API key, register the image's llama.cpp build, then exec the command (`llamastudio serve
# --host 0.0.0.0` by default).
#
# - Started as root (`--user 0`, e.g. for a host directory owned by root): /app/data and the HF
#   cache are given to the studio user, and the command runs as that user (setpriv).
# - Keys: `serve` refuses a non-loopback bind while a listener has no key (src/llamastudio/
#   server.py), and inside a container it must bind 0.0.0.0 for `-p` to work. Keys not set in the
#   environment are taken from <data>/api-keys.env, generated there (0600) on the first start.
#   LLAMASTUDIO_INSECURE=1 skips this (then anyone who reaches the published ports drives the
#   studio: publish them on 127.0.0.1 only).
set -eu

DATA="${LLAMASTUDIO_DATA_DIR:-/app/data}"
HF="${HF_HOME:-/app/hf-cache}"
KEYS="$DATA/api-keys.env"

log() { printf 'llamastudio-entrypoint: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
    for dir in "$DATA" "$HF"; do
        mkdir -p "$dir"
        if [ "$(stat -c %U "$dir")" != studio ]; then
            log "giving $dir to the studio user (uid $(id -u studio))"
            chown -R studio:studio "$dir"
        fi
    done
    # the studio user's groups plus any the container was started with (compose group_add)
    groups="$( (id -G studio; id -G) | tr ' ' '\n' | grep -vx 0 | sort -un | paste -sd, -)"
    exec setpriv --reuid=studio --regid=studio --groups="$groups" -- env HOME=/home/studio "$0" "$@"
fi

if ! mkdir -p "$DATA" 2>/dev/null || ! [ -w "$DATA" ]; then
    owner="$(stat -c '%u:%g' "$DATA" 2>/dev/null || echo '?')"
    log "error: $DATA is not writable by uid $(id -u) (it belongs to $owner)."
    log "A host directory mounted there must belong to that uid: 'sudo chown -R $(id -u):$(id -g) <dir>',"
    log "or start the container with --user 0 (compose: user: \"0\") to have it handed over."
    exit 1
fi
if [ ! -w "${HOME:-/nonexistent}" ]; then
    export HOME="$DATA/home"  # an arbitrary --user has no home of its own
    mkdir -p "$HOME"
fi

truthy() { case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in 1|true|yes|on) return 0 ;; esac; return 1; }

if ! truthy "${LLAMASTUDIO_INSECURE:-}"; then
    if [ -z "${LLAMASTUDIO_API_KEY:-}" ] || [ -z "${LLAMASTUDIO_GATEWAY_API_KEY:-}" ]; then
        /opt/llamastudio/venv/bin/python - "$KEYS" <<'EOF'
import os, secrets, sys
path = sys.argv[1]
names = ("LLAMASTUDIO_API_KEY", "LLAMASTUDIO_GATEWAY_API_KEY")
have = {}
if os.path.exists(path):
    for line in open(path):
        name, sep, value = line.strip().partition("=")
        if sep and name in names and value:
            have[name] = value
missing = [n for n in names if n not in have and not os.environ.get(n)]
if missing:
    for name in missing:
        have[name] = secrets.token_urlsafe(24)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(f"{n}={have[n]}\n" for n in names if n in have))
    os.replace(tmp, path)
    sys.stderr.write(
        f"llamastudio-entrypoint: generated {' and '.join(missing)} into {path} (set them in the "
        "environment to choose your own); read them with `docker exec <container> cat "
        f"{path}`\n"
    )
EOF
    fi
fi

# A studio killed with its container (docker kill, OOM) leaves <data>/run/studio.json behind, and
# its pid, from the old container's pid namespace, may be taken by another process in this one:
# `serve` would then refuse to start. No studio of this container runs yet, so the record is stale.
if [ -f "$DATA/run/studio.json" ]; then
    log "removing the run record of a studio that did not stop cleanly"
    rm -f "$DATA/run/studio.json"
fi

# the CLI wrapper (/opt/llamastudio/bin/llamastudio) reads the key file: so do `docker exec` calls
/opt/llamastudio/venv/bin/python /opt/llamastudio/docker/register_engine.py

exec "$@"
