#!/usr/bin/env bash
# Installs the Debian packages the test suite and the recovery commands need, if missing:
# a PostgreSQL server and client tools (initdb, pg_ctl, pg_dump, pg_restore, psql) and
# openssl (the encrypted key backups in docs/DISASTER_RECOVERY.md), pgbackrest (the
# pgBackRest run of the pitr drill), and patroni with etcd-server (the automatic-promotion
# run of the failover drill). Nothing is installed when every tool is already there.
set -euo pipefail

missing=()
command -v psql >/dev/null || missing+=(postgresql-client)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v pg_restore >/dev/null || missing+=(postgresql-client)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v openssl >/dev/null || missing+=(openssl)
command -v pgbackrest >/dev/null || missing+=(pgbackrest)
command -v patroni >/dev/null || missing+=(patroni)
command -v etcd >/dev/null || missing+=(etcd-server)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if ! command -v apt-get >/dev/null; then
    echo "missing tools; install these packages yourself: $packages" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing Debian packages: $packages" >&2
$sudo apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $packages
