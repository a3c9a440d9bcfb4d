#!/usr/bin/env bash
# archive_command of a gocd-ha-operator Postgres instance: archive-wal.sh <%p> <%f>
#
# Copies one WAL file (segment, .history, .partial, .backup) into GOCDHA_ARCHIVE_DIR, the WAL
# archive on the shared volume. Rules (docs/postgres-instances.md, "Archive rules"):
#   - write to a temporary name in the archive, fsync it, then publish it under its final name with
#     a hard link, which fails instead of replacing an existing file; fsync the directory;
#   - never overwrite: an identical existing file is success (Postgres re-archives after a crash);
#   - a different existing file means two primaries wrote the same WAL name: fail with a line
#     containing "split brain" and the file name, and leave the archived file untouched.
# Exit status 0 tells Postgres the file is safe to recycle; anything else makes it retry later.
set -uo pipefail

log() { echo "archive-wal.sh: $*" >&2; }

if [ "$#" -ne 2 ]; then
  log "usage: archive-wal.sh <path of the WAL file (%p)> <file name (%f)>"
  exit 2
fi
source_path=$1
wal_name=$2
archive_dir=${GOCDHA_ARCHIVE_DIR:-}

if [ -z "$archive_dir" ]; then
  log "GOCDHA_ARCHIVE_DIR is not set: no archive to write to"
  exit 2
fi
case "$wal_name" in
  "" | */* | .*)
    log "refusing suspicious WAL file name '$wal_name'"
    exit 2
    ;;
esac
if [ ! -f "$source_path" ]; then
  log "WAL file '$source_path' does not exist"
  exit 1
fi
if [ ! -d "$archive_dir" ]; then
  log "archive directory '$archive_dir' does not exist (is the shared volume mounted?)"
  exit 1
fi

target="$archive_dir/$wal_name"

# Compares an existing archived file with ours. Identical: make sure it is durable, then succeed.
check_existing() {
  if cmp -s -- "$source_path" "$target"; then
    sync -- "$target" 2>/dev/null || true
    exit 0
  fi
  log "split brain: $wal_name already in the archive '$archive_dir' with different content;" \
    "another primary is writing this WAL history. Not overwriting it."
  exit 1
}

if [ -e "$target" ]; then
  check_existing
fi

temporary="$archive_dir/.tmp.$wal_name.$$.${HOSTNAME:-host}"
cleanup() { rm -f -- "$temporary"; }
trap cleanup EXIT

if ! cp -- "$source_path" "$temporary" 2>/dev/null; then
  log "cannot write to the archive directory '$archive_dir' (read-only, full or not permitted)"
  exit 1
fi
if ! sync -- "$temporary"; then
  log "fsync of '$temporary' failed"
  exit 1
fi
# ln refuses to replace an existing name: two archivers racing for one name cannot both win.
if ! ln -- "$temporary" "$target" 2>/dev/null; then
  if [ -e "$target" ]; then
    check_existing
  fi
  # Some shared file systems do not support hard links; mv -n never replaces either, but is
  # not atomic against a concurrent writer, so check what ended up there.
  if ! mv -n -- "$temporary" "$target" || [ -e "$temporary" ]; then
    [ -e "$target" ] && check_existing
    log "could not publish $wal_name in '$archive_dir'"
    exit 1
  fi
  check_existing
fi
if ! sync -- "$archive_dir"; then
  log "fsync of the archive directory '$archive_dir' failed"
  exit 1
fi
exit 0
