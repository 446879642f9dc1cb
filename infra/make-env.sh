#!/bin/sh
# Write .env for docker-compose.yml from .env.example, every empty value a fresh random secret
# (PREFECT_AUTH_STRING as admin:<secret>). Refuses to overwrite an existing .env.
set -eu
cd "$(dirname "$0")/.."
if [ -e .env ]; then
    echo ".env exists: edit it, or remove it to start over (the databases keep the old passwords)" >&2
    exit 1
fi
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
umask 077
while IFS= read -r line; do
    case "$line" in
        PREFECT_AUTH_STRING=) echo "PREFECT_AUTH_STRING=admin:$(secret)" ;;
        [A-Z]*=) echo "$line$(secret)" ;;
        *) echo "$line" ;;
    esac
done < .env.example > .env
echo "wrote .env (mode 600); keep it out of git"
