#!/usr/bin/env bash
# archive_cleanup_command of a standby: removes archived WAL the standby no longer needs, but never
# WAL that a kept backup needs. backup.sh records the first segment the oldest kept backup needs in
# "$GOCDHA_ARCHIVE_DIR/.gocdha-backup-keep-from"; the cleanup stops at the earlier of that segment
# and the standby's restart point (%r). Without backups (no marker) it is plain pg_archivecleanup.
#
# Usage: cleanup-wal.sh <restart point WAL file (%r)>
set -uo pipefail

log() { echo "cleanup-wal.sh: $*" >&2; }

if [ "$#" -ne 1 ]; then
  log "usage: cleanup-wal.sh <restart point WAL file (%r)>"
  exit 2
fi
restart_point=$1
archive_dir=${GOCDHA_ARCHIVE_DIR:-}
[ -n "$archive_dir" ] || {
  log "GOCDHA_ARCHIVE_DIR is not set"
  exit 2
}
wal_pattern='^[0-9A-F]{24}$'
[[ "$restart_point" =~ $wal_pattern ]] || {
  log "refusing suspicious restart point '$restart_point'"
  exit 2
}
oldest_needed=$restart_point
marker="$archive_dir/.gocdha-backup-keep-from"
if [ -f "$marker" ]; then
  keep_from=$(head -n 1 "$marker")
  if [[ "$keep_from" =~ $wal_pattern ]]; then
    # pg_archivecleanup orders segments by their name without the 8-character timeline.
    if [[ "${keep_from:8}" < "${oldest_needed:8}" ]]; then
      oldest_needed=$keep_from
    fi
  else
    # An unreadable marker must not let the cleanup remove a backup's WAL: keep everything.
    log "ignoring the cleanup: '$marker' does not name a WAL segment"
    exit 0
  fi
fi
exec pg_archivecleanup "$archive_dir" "$oldest_needed"
