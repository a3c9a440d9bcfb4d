#!/usr/bin/env bash
# Restores a Postgres data directory (and GoCD's files) from a backup taken by backup.sh, to the
# end of the archived WAL or to a point in time. Nothing is written to PGDATA before the chosen
# backup has been verified: a backup volume that holds no backup, a target outside the window
# that can be recovered, or a backup whose checksums do not match is refused with a message.
#
# Environment:
#   GOCDHA_BACKUP_DIR              the backup volume                                    required
#   PGDATA                         the data directory to create (must not hold data)   required
#   GOCDHA_SCRIPTS_DIR             where restore-wal.sh is (for restore_command)       required
#   GOCDHA_RECOVERY_ARCHIVE_DIR    the source cluster's WAL archive to replay from (mounted
#                                  read-only: the recovered cluster archives to its own); without
#                                  it, recovery ends with the WAL inside the backup
#   GOCDHA_ARCHIVE_DIR             the instance's own archive (the fallback above: still empty)
#   GOCDHA_RECOVERY_BACKUP         a backup's name, or "latest" (the default)
#   GOCDHA_RECOVERY_TARGET_TIME    an RFC 3339 time (2026-12-02T01:30:00Z): replay stops there
#   GOCDHA_GOCD_RESTORE_DIR        where to put the backup's GoCD files, optional
#   GOCDHA_GOCD_FILES_GROUP        the group that may read them (GoCD's, 0), optional
#   GOCDHA_RECOVERY_MARKER         a file written (with the backup's name) once files are in place
#   GOCDHA_PG_BINDIR               where pg_verifybackup is, optional
#
# The restored instance starts in archive recovery (recovery.signal); at the target, or at the
# end of the archive without one, Postgres promotes it on a new timeline.
set -euo pipefail
export LC_ALL=C

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) recover.sh: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

for variable in GOCDHA_BACKUP_DIR PGDATA GOCDHA_SCRIPTS_DIR; do
  [ -n "${!variable:-}" ] || die "$variable is not set"
done
backup_dir=$GOCDHA_BACKUP_DIR
[ -d "$backup_dir" ] || die "backup directory GOCDHA_BACKUP_DIR '$backup_dir' does not exist (is the backup volume mounted?)"
source_archive=${GOCDHA_RECOVERY_ARCHIVE_DIR:-${GOCDHA_ARCHIVE_DIR:-}}
[ -n "$source_archive" ] || die "neither GOCDHA_RECOVERY_ARCHIVE_DIR nor GOCDHA_ARCHIVE_DIR is set"
[ -d "$source_archive" ] || die "WAL archive '$source_archive' does not exist (GOCDHA_RECOVERY_ARCHIVE_DIR)"
case "$source_archive" in
  *\'* | *\"* | *$'\n'* | *\\*) die "GOCDHA_RECOVERY_ARCHIVE_DIR '$source_archive' may not contain quotes, backslashes or line breaks" ;;
esac
if [ -e "$PGDATA" ] && [ -n "$(ls -A -- "$PGDATA" 2>/dev/null)" ]; then
  die "PGDATA '$PGDATA' already holds data: recovery only creates a new data directory"
fi
if [ -n "${GOCDHA_PG_BINDIR:-}" ]; then
  PATH="$GOCDHA_PG_BINDIR:$PATH"
fi
command -v pg_verifybackup >/dev/null || die "pg_verifybackup is not on PATH (set GOCDHA_PG_BINDIR)"
wanted=${GOCDHA_RECOVERY_BACKUP:-latest}
target=${GOCDHA_RECOVERY_TARGET_TIME:-}

manifest_field() { # manifest_field BACKUP FIELD: a top-level string or number of manifest.json
  sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$backup_dir/$1/manifest.json"
}
epoch_of() { date -u -d "$1" +%s 2>/dev/null; }

mapfile -t backups < <(find "$backup_dir" -mindepth 2 -maxdepth 2 -name manifest.json -printf '%h\n' |
  xargs -r -n1 basename | sort)
[ "${#backups[@]}" -gt 0 ] || die "no backup in '$backup_dir' (a backup is a directory with a manifest.json)"

target_epoch=""
if [ -n "$target" ]; then
  [[ "$target" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$ ]] ||
    die "GOCDHA_RECOVERY_TARGET_TIME '$target' is not an RFC 3339 time such as 2026-12-02T01:30:00Z"
  target_epoch=$(epoch_of "$target") || die "GOCDHA_RECOVERY_TARGET_TIME '$target' is not a valid time"
  [ "$target_epoch" -le "$(date -u +%s)" ] || die "target time $target is in the future"
  earliest=$(manifest_field "${backups[0]}" finishedAt)
  [ "$target_epoch" -ge "$(epoch_of "$earliest")" ] ||
    die "target time $target is before the earliest recoverable point $earliest (end of backup '${backups[0]}')"
fi

chosen=""
if [ "$wanted" = latest ]; then
  for candidate in "${backups[@]}"; do
    if [ -z "$target_epoch" ] || [ "$(epoch_of "$(manifest_field "$candidate" finishedAt)")" -le "$target_epoch" ]; then
      chosen=$candidate
    fi
  done
else
  [[ "$wanted" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] || die "GOCDHA_RECOVERY_BACKUP '$wanted' is not a backup name"
  [ -f "$backup_dir/$wanted/manifest.json" ] || die "no backup named '$wanted' in '$backup_dir' (there are: ${backups[*]})"
  chosen=$wanted
  if [ -n "$target_epoch" ]; then
    finished=$(manifest_field "$chosen" finishedAt)
    [ "$(epoch_of "$finished")" -le "$target_epoch" ] ||
      die "target time $target is before the end of backup '$chosen' ($finished): choose an older backup"
  fi
fi
source_dir="$backup_dir/$chosen"
log "recovering from backup '$chosen'${target:+ to $target}"

# --- verify everything before writing anything -----------------------------------------------------
expected=$(sed -n 's/.*"pgdata\/backup_manifest": "\([0-9a-f]*\)".*/\1/p' "$source_dir/manifest.json")
actual=$(sha256sum "$source_dir/pgdata/backup_manifest" | cut -d' ' -f1)
[ -n "$expected" ] && [ "$expected" = "$actual" ] ||
  die "backup '$chosen' failed verification: backup_manifest does not match manifest.json"
verify_log=$(mktemp)
trap 'rm -f -- "$verify_log"' EXIT
if ! pg_verifybackup --quiet "$source_dir/pgdata" >"$verify_log" 2>&1; then
  sed 's/^/  pg_verifybackup: /' "$verify_log" >&2
  die "backup '$chosen' failed verification (pg_verifybackup): nothing was restored"
fi
if [ "$(manifest_field "$chosen" gocdFiles)" = true ]; then
  expected=$(sed -n 's/.*"gocd.sha256": "\([0-9a-f]*\)".*/\1/p' "$source_dir/manifest.json")
  actual=$(sha256sum "$source_dir/gocd.sha256" | cut -d' ' -f1)
  [ "$expected" = "$actual" ] || die "backup '$chosen' failed verification: gocd.sha256 does not match manifest.json"
  (cd "$source_dir/gocd" && sha256sum --quiet --strict -c "$source_dir/gocd.sha256") >"$verify_log" 2>&1 ||
    die "backup '$chosen' failed verification: GoCD files do not match their checksums ($(head -n 1 "$verify_log"))"
fi

# --- restore -------------------------------------------------------------------------------------
staging="${PGDATA%/}.gocdha-recovering"
rm -rf -- "$staging"
cp -a -- "$source_dir/pgdata" "$staging"
rm -f -- "$staging/backup_manifest" "$staging/standby.signal"
chmod 0700 "$staging"
# The source archive, not the instance's own: the recovered cluster archives its new timeline to
# its own shared volume and must never write into the source's history.
restore_command="GOCDHA_ARCHIVE_DIR=\"$source_archive\" bash \"\${GOCDHA_SCRIPTS_DIR}/restore-wal.sh\" %f %p"
# The recovery settings live in their own file, included last: the instance entrypoint removes it
# once recovery.signal is gone (recovery finished), so a later standby of this data dir never
# reads the source's archive.
{
  echo "# Written by recover.sh (backup '$chosen'); removed by entrypoint.sh after recovery."
  echo "restore_command = '$restore_command'"
  echo "recovery_target_timeline = 'latest'"
  if [ -n "$target" ]; then
    # Postgres reads "2026-12-02 01:30:00.5+00", not RFC 3339's "T" and "Z".
    pg_target=${target/T/ }
    [[ "$pg_target" != *Z ]] || pg_target="${pg_target%Z}+00"
    echo "recovery_target_time = '$pg_target'"
    echo "recovery_target_action = 'promote'"
  fi
} >"$staging/gocdha-bootstrap.conf"
printf "\n# Recovery from a backup (removed with the file when recovery ends)\ninclude_if_exists 'gocdha-bootstrap.conf'\n" >>"$staging/postgresql.conf"
: >"$staging/recovery.signal"
[ -e "$PGDATA" ] && rmdir -- "$PGDATA"
mv -- "$staging" "$PGDATA"

if [ "$(manifest_field "$chosen" gocdFiles)" = true ] && [ -n "${GOCDHA_GOCD_RESTORE_DIR:-}" ]; then
  mkdir -p -- "$GOCDHA_GOCD_RESTORE_DIR"
  cp -R -- "$source_dir/gocd/." "$GOCDHA_GOCD_RESTORE_DIR/"
  # GoCD's servers (group 0) read them; nobody else may (cipher.aes is a key).
  if [ -n "${GOCDHA_GOCD_FILES_GROUP:-}" ]; then
    chgrp -R -- "$GOCDHA_GOCD_FILES_GROUP" "$GOCDHA_GOCD_RESTORE_DIR" ||
      die "cannot give the restored GoCD files to group $GOCDHA_GOCD_FILES_GROUP"
  fi
  chmod -R u+rwX,g+rX,g-w,o-rwx -- "$GOCDHA_GOCD_RESTORE_DIR"
  log "GoCD files of backup '$chosen' restored to $GOCDHA_GOCD_RESTORE_DIR"
fi
if [ -n "${GOCDHA_RECOVERY_MARKER:-}" ]; then
  # Tells the GoCD server's restore init container that the files of the backup's moment are in
  # place (or that the backup has none): it waits for this before it restores.
  printf '%s\n' "$chosen" >"$GOCDHA_RECOVERY_MARKER.tmp.$$"
  chmod 0644 "$GOCDHA_RECOVERY_MARKER.tmp.$$"
  mv -- "$GOCDHA_RECOVERY_MARKER.tmp.$$" "$GOCDHA_RECOVERY_MARKER"
fi
echo "recover: backup=$chosen target=${target:-latest}"
