#!/usr/bin/env bash
# restore_command of a gocd-ha-operator Postgres instance: restore-wal.sh <%f> <%p>
#
# Copies one file from GOCDHA_ARCHIVE_DIR (the WAL archive on the shared volume) to where
# Postgres asks for it. Postgres calls this for files that do not exist yet (the next segment,
# future .history files) all the time, so a missing file returns 1 at once and silently; only
# real problems are logged.
set -uo pipefail

log() { echo "restore-wal.sh: $*" >&2; }

if [ "$#" -ne 2 ]; then
  log "usage: restore-wal.sh <file name (%f)> <destination path (%p)>"
  exit 2
fi
wal_name=$1
destination=$2
archive_dir=${GOCDHA_ARCHIVE_DIR:-}

if [ -z "$archive_dir" ]; then
  log "GOCDHA_ARCHIVE_DIR is not set: no archive to read from"
  exit 2
fi
case "$wal_name" in
  "" | */* | .*)
    log "refusing suspicious WAL file name '$wal_name'"
    exit 2
    ;;
esac
if [ ! -d "$archive_dir" ]; then
  log "archive directory '$archive_dir' does not exist (is the shared volume mounted?)"
  exit 1
fi
source_path="$archive_dir/$wal_name"
if [ ! -e "$source_path" ]; then
  exit 1
fi
if ! cp -- "$source_path" "$destination"; then
  log "could not copy $wal_name from '$archive_dir'"
  exit 1
fi
exit 0
