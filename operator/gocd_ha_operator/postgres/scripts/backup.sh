#!/usr/bin/env bash
# Takes one backup of a GoCDHACluster: a Postgres base backup (with its backup manifest and the
# WAL that makes it consistent) plus GoCD's files as they were, described by one manifest.json.
#
# Runs in the Postgres image (the backup Job), configured only by environment variables:
#   GOCDHA_BACKUP_DIR                 the backup volume (never the shared volume)       required
#   GOCDHA_BACKUP_HOST, _PORT         the instance to copy from (the standby when it streams)
#   GOCDHA_BACKUP_HOSTADDR            its numeric address, when the name does not resolve here
#   GOCDHA_TLS_CA_FILE                the cluster CA: the connection is TLS, verify-full   required
#   GOCDHA_REPLICATION_PASSWORD_FILE  the replication role's password                   required
#   GOCDHA_BACKUP_NAME                the backup's name (default: UTC time, 20261202T013000Z)
#   GOCDHA_GOCD_FILES_DIR             GoCD's files to include (the Cold mirror), optional
#   GOCDHA_BACKUP_KEEP                how many backups retention keeps (default: all)
#   GOCDHA_BACKUP_MAX_AGE_SECONDS     older backups are removed (the newest is always kept)
#   GOCDHA_ARCHIVE_DIR                the WAL archive, to record the oldest WAL still needed
#   GOCDHA_PG_BINDIR                  where pg_basebackup and pg_verifybackup are, optional
#   GOCDHA_TERMINATION_LOG            where to copy manifest.json for the operator, optional
#
# Layout of the backup volume:
#   <name>/pgdata/          plain-format base backup, backup_manifest, pg_wal/ (streamed WAL)
#   <name>/gocd/            GoCD's files (when GOCDHA_GOCD_FILES_DIR is set)
#   <name>/gocd.sha256      sha256sum lines of every file under gocd/
#   <name>/manifest.json    written last: a directory without it is not a backup
#   .partial.<name>/        a backup being taken (removed on failure)
#   .lock/                  one backup at a time on this volume
# The archive gets ".gocdha-backup-keep-from": the first WAL segment the oldest kept backup needs;
# the standbys' archive cleanup (cleanup-wal.sh) never removes it or anything after it.
#
# The password is only written to a 0600 passfile in a private temp dir, never to a log line.
set -euo pipefail
export LC_ALL=C

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) backup.sh: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

backup_dir=${GOCDHA_BACKUP_DIR:-}
[ -n "$backup_dir" ] || die "GOCDHA_BACKUP_DIR is not set: no backup volume to write to"
[ -d "$backup_dir" ] || die "backup directory GOCDHA_BACKUP_DIR '$backup_dir' does not exist (is the backup volume mounted?)"
[ -n "${GOCDHA_REPLICATION_PASSWORD_FILE:-}" ] || die "GOCDHA_REPLICATION_PASSWORD_FILE is not set"
[ -r "$GOCDHA_REPLICATION_PASSWORD_FILE" ] || die "cannot read GOCDHA_REPLICATION_PASSWORD_FILE '$GOCDHA_REPLICATION_PASSWORD_FILE'"
host=${GOCDHA_BACKUP_HOST:-}
[ -n "$host" ] || die "GOCDHA_BACKUP_HOST is not set: no instance to copy from"
port=${GOCDHA_BACKUP_PORT:-5432}
[[ "$port" =~ ^[0-9]+$ ]] || die "GOCDHA_BACKUP_PORT '$port' is not a port number"
ca_file=${GOCDHA_TLS_CA_FILE:-}
[ -n "$ca_file" ] && [ -r "$ca_file" ] ||
  die "GOCDHA_TLS_CA_FILE '$ca_file' is not a readable file: the cluster CA is needed to verify the instance"
name=${GOCDHA_BACKUP_NAME:-$(date -u +%Y%m%dT%H%M%SZ)}
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] ||
  die "GOCDHA_BACKUP_NAME '$name' must be 1-63 letters, digits, '.', '_' or '-' (not starting with '.' or '-')"
keep=${GOCDHA_BACKUP_KEEP:-}
[ -z "$keep" ] || [[ "$keep" =~ ^[1-9][0-9]{0,5}$ ]] || die "GOCDHA_BACKUP_KEEP '$keep' must be a whole number from 1"
max_age=${GOCDHA_BACKUP_MAX_AGE_SECONDS:-}
[ -z "$max_age" ] || [[ "$max_age" =~ ^[1-9][0-9]{0,10}$ ]] ||
  die "GOCDHA_BACKUP_MAX_AGE_SECONDS '$max_age' must be a whole number of seconds from 1"
if [ -n "${GOCDHA_PG_BINDIR:-}" ]; then
  PATH="$GOCDHA_PG_BINDIR:$PATH"
fi
for tool in pg_basebackup pg_verifybackup sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH (set GOCDHA_PG_BINDIR)"
done

final="$backup_dir/$name"
partial="$backup_dir/.partial.$name"
lock="$backup_dir/.lock"
[ ! -e "$final" ] || die "a backup named '$name' already exists in '$backup_dir'"
if ! mkdir "$lock" 2>/dev/null; then
  die "another backup is running on '$backup_dir' (remove '$lock' if none is)"
fi
private=$(mktemp -d)
cleanup() {
  local status=$?
  rm -rf -- "$private"
  if [ "$status" -ne 0 ]; then
    rm -rf -- "$partial"
  fi
  rmdir -- "$lock" 2>/dev/null || true
}
trap cleanup EXIT

password=$(<"$GOCDHA_REPLICATION_PASSWORD_FILE")
value=${password//\\/\\\\}
printf '*:*:*:gocdha_replication:%s\n' "${value//:/\\:}" >"$private/pgpass"
unset password value
chmod 0600 "$private/pgpass"
export PGPASSFILE="$private/pgpass"

rm -rf -- "$partial"
mkdir -p -- "$partial"
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
started_epoch=$(date -u +%s)
log "taking base backup '$name' from $host:$port"
# TLS with full verification against the Service name (docs/architecture.md §17).
quote() {
  local value=${1//\\/\\\\}
  printf "'%s'" "${value//\'/\\\'}"
}
conninfo="host=$(quote "$host") port=$port user=gocdha_replication sslmode=verify-full sslrootcert=$(quote "$ca_file")"
if [ -n "${GOCDHA_BACKUP_HOSTADDR:-}" ]; then
  conninfo="$conninfo hostaddr=$(quote "$GOCDHA_BACKUP_HOSTADDR")"
fi
if ! pg_basebackup --dbname="$conninfo" --no-password \
  --pgdata="$partial/pgdata" --format=plain --wal-method=stream --checkpoint=fast \
  --manifest-checksums=SHA256 --label="gocdha $name" >"$private/basebackup.log" 2>&1; then
  sed 's/^/  pg_basebackup: /' "$private/basebackup.log" >&2
  die "pg_basebackup from $host:$port failed"
fi
if ! pg_verifybackup --quiet "$partial/pgdata" >"$private/verify.log" 2>&1; then
  sed 's/^/  pg_verifybackup: /' "$private/verify.log" >&2
  die "the base backup just taken does not verify"
fi

# backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)", "START TIMELINE: 1"
label="$partial/pgdata/backup_label"
start_wal=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]\{24\}\)).*$/\1/p' "$label")
start_lsn=$(sed -n 's/^START WAL LOCATION: \([0-9A-F]*\/[0-9A-F]*\) .*$/\1/p' "$label")
timeline=$(sed -n 's/^START TIMELINE: \([0-9]*\)$/\1/p' "$label")
[ -n "$start_wal" ] && [ -n "$start_lsn" ] && [ -n "$timeline" ] || die "cannot read the start WAL from backup_label"
# backup_manifest: "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]
end_lsn=$(grep -o '"End-LSN": "[0-9A-F]*/[0-9A-F]*"' "$partial/pgdata/backup_manifest" | tail -n 1 |
  sed 's/.*"\([0-9A-F]*\/[0-9A-F]*\)"$/\1/')
[ -n "$end_lsn" ] || die "cannot read the end LSN from backup_manifest"
end_wal=$(ls -1 "$partial/pgdata/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | tail -n 1)

gocd_files=false
if [ -n "${GOCDHA_GOCD_FILES_DIR:-}" ]; then
  [ -d "$GOCDHA_GOCD_FILES_DIR" ] || die "GOCDHA_GOCD_FILES_DIR '$GOCDHA_GOCD_FILES_DIR' is not a directory"
  cp -a -- "$GOCDHA_GOCD_FILES_DIR" "$partial/gocd"
  (cd "$partial/gocd" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) >"$partial/gocd.sha256"
  gocd_files=true
fi

finished_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
size_bytes=$(du -sb -- "$partial" | cut -f1)
manifest_sha=$(sha256sum "$partial/pgdata/backup_manifest" | cut -d' ' -f1)
gocd_sha=""
[ "$gocd_files" = false ] || gocd_sha=$(sha256sum "$partial/gocd.sha256" | cut -d' ' -f1)
cat >"$partial/manifest.json" <<JSON
{
  "name": "$name",
  "startedAt": "$started_at",
  "finishedAt": "$finished_at",
  "durationSeconds": $(($(date -u +%s) - started_epoch)),
  "source": "$host:$port",
  "timeline": $timeline,
  "startLsn": "$start_lsn",
  "endLsn": "$end_lsn",
  "startWal": "$start_wal",
  "endWal": "$end_wal",
  "sizeBytes": $size_bytes,
  "gocdFiles": $gocd_files,
  "checksums": {"pgdata/backup_manifest": "$manifest_sha", "gocd.sha256": "$gocd_sha"}
}
JSON
sync -f "$partial/manifest.json" 2>/dev/null || sync
mv -- "$partial" "$final"
sync -f "$backup_dir" 2>/dev/null || sync
log "backup '$name' complete: WAL $start_wal..$end_wal, $size_bytes bytes"

# --- retention: backups first, then the WAL no kept backup needs ---------------------------------
mapfile -t backups < <(find "$backup_dir" -mindepth 2 -maxdepth 2 -name manifest.json -printf '%h\n' |
  xargs -r -n1 basename | sort)
now=$(date -u +%s)
count=${#backups[@]}
kept=()
for index in "${!backups[@]}"; do
  candidate=${backups[$index]}
  newest=$((index == count - 1))
  remove=0
  if [ -n "$keep" ] && [ $((count - index)) -gt "$keep" ]; then
    remove=1
  fi
  if [ -n "$max_age" ] && [ "$newest" -eq 0 ]; then
    finished=$(sed -n 's/^  "finishedAt": "\(.*\)",$/\1/p' "$backup_dir/$candidate/manifest.json")
    finished_epoch=$(date -u -d "$finished" +%s 2>/dev/null || echo "$now")
    [ $((now - finished_epoch)) -le "$max_age" ] || remove=1
  fi
  if [ "$remove" -eq 1 ] && [ "$newest" -eq 0 ]; then
    log "retention: removing backup '$candidate'"
    # manifest.json first: a half-removed backup is never taken for a whole one.
    rm -f -- "$backup_dir/$candidate/manifest.json"
    rm -rf -- "${backup_dir:?}/$candidate"
  else
    kept+=("$candidate")
  fi
done
if [ -n "${GOCDHA_ARCHIVE_DIR:-}" ] && [ -d "$GOCDHA_ARCHIVE_DIR" ] && [ "${#kept[@]}" -gt 0 ]; then
  oldest_wal=$(sed -n 's/^  "startWal": "\(.*\)",$/\1/p' "$backup_dir/${kept[0]}/manifest.json")
  marker="$GOCDHA_ARCHIVE_DIR/.gocdha-backup-keep-from"
  printf '%s\n' "$oldest_wal" >"$marker.tmp.$$"
  mv -- "$marker.tmp.$$" "$marker"
  log "the archive keeps WAL from $oldest_wal (oldest kept backup '${kept[0]}')"
fi
oldest_finished=""
[ "${#kept[@]}" -eq 0 ] ||
  oldest_finished=$(sed -n 's/^  "finishedAt": "\(.*\)",$/\1/p' "$backup_dir/${kept[0]}/manifest.json")
if [ -n "${GOCDHA_TERMINATION_LOG:-}" ]; then
  # The operator reads this from the container's termination message (4 KiB at most): the
  # backup's manifest and what retention kept.
  {
    printf '{"manifest": '
    cat -- "$final/manifest.json"
    printf ', "retention": {"kept": %s, "oldest": "%s", "oldestFinishedAt": "%s"}}\n' \
      "${#kept[@]}" "${kept[0]:-}" "$oldest_finished"
  } >"$GOCDHA_TERMINATION_LOG" 2>/dev/null ||
    log "could not write the report to GOCDHA_TERMINATION_LOG '$GOCDHA_TERMINATION_LOG'"
fi
echo "backup: name=$name start_wal=$start_wal end_wal=$end_wal size_bytes=$size_bytes kept=${#kept[@]}"
