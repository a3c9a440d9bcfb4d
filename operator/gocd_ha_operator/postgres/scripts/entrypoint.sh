#!/usr/bin/env bash
# Entrypoint of one gocd-ha-operator Postgres instance (one side of a GoCDHACluster).
#
# In Kubernetes the official postgres image runs `bash /opt/gocdha/config/entrypoint.sh`; outside
# a container the same script runs against local binaries. It is configured only by environment
# variables (docs/postgres-instances.md lists them) and ends by exec-ing `postgres` in the
# foreground, so signals reach the postmaster directly.
#
# What it does depends on GOCDHA_ROLE and on the data directory it finds:
#   primary, empty data dir   -> initdb, roles, GoCD database, slot for the peer, start
#   primary, existing dir     -> start as primary, unless the dir is fenced (see below) or the
#                                WAL archive holds a newer timeline (a former primary: rejoin);
#                                the Secret files' passwords are applied to the roles first
#   standby, empty data dir   -> wait for the primary, pg_basebackup with the slot, stream
#   standby, standby dir      -> start streaming again
#   standby, former primary   -> fence it, pg_rewind from the peer; if rewind fails, move the old
#                                dir aside (kept, logged) and take a fresh base backup
# Fencing: a data dir that is not a primary's (standby.signal present, or the sibling marker
# "<PGDATA>.gocdha-fenced" left by a rejoin in progress) never starts as a primary from here.
# Only pg_promote() (the operator's promotion step, after it fenced the old primary and checked
# the replay position) turns a standby into a primary: it starts a new timeline, which removing
# standby.signal here would not, and the two primaries' WAL would collide in the archive.
#
# Secrets: passwords are read from files and only ever written to 0600 passfiles in the socket
# directory; they are never in a command line, a conf file or a log line.
set -euo pipefail
export LC_ALL=C

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) entrypoint.sh[side=${GOCDHA_SIDE:-?}]: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# --- configuration ------------------------------------------------------------------------------

require_env() {
  local name=$1
  [ -n "${!name:-}" ] || die "environment variable $name is not set"
}

for name in PGDATA GOCDHA_SIDE GOCDHA_ROLE GOCDHA_ARCHIVE_DIR GOCDHA_CONFIG_DIR \
  GOCDHA_SCRIPTS_DIR GOCDHA_SOCKET_DIR GOCDHA_SUPERUSER_PASSWORD_FILE \
  GOCDHA_REPLICATION_PASSWORD_FILE GOCDHA_OPERATOR_PASSWORD_FILE GOCDHA_GOCD_PASSWORD_FILE \
  GOCDHA_TLS_SECRET_DIR; do
  require_env "$name"
done

case "$GOCDHA_SIDE" in
  a) peer_side=b ;;
  b) peer_side=a ;;
  *) die "GOCDHA_SIDE must be 'a' or 'b', not '$GOCDHA_SIDE'" ;;
esac
case "$GOCDHA_ROLE" in
  primary | standby) ;;
  *) die "GOCDHA_ROLE must be 'primary' or 'standby', not '$GOCDHA_ROLE'" ;;
esac

GOCDHA_PORT=${GOCDHA_PORT:-5432}
GOCDHA_DATABASE=${GOCDHA_DATABASE:-gocd}
GOCDHA_LISTEN_ADDRESSES=${GOCDHA_LISTEN_ADDRESSES:-*}
GOCDHA_WAIT_PRIMARY_SECONDS=${GOCDHA_WAIT_PRIMARY_SECONDS:-600}
GOCDHA_PEER_HOST=${GOCDHA_PEER_HOST:-}
GOCDHA_PEER_PORT=${GOCDHA_PEER_PORT:-5432}

[[ "$GOCDHA_PORT" =~ ^[0-9]+$ ]] || die "GOCDHA_PORT '$GOCDHA_PORT' is not a port number"
[[ "$GOCDHA_PEER_PORT" =~ ^[0-9]+$ ]] || die "GOCDHA_PEER_PORT '$GOCDHA_PEER_PORT' is not a port number"
[[ "$GOCDHA_WAIT_PRIMARY_SECONDS" =~ ^[0-9]+$ ]] ||
  die "GOCDHA_WAIT_PRIMARY_SECONDS '$GOCDHA_WAIT_PRIMARY_SECONDS' is not a number of seconds"
[[ "$GOCDHA_DATABASE" =~ ^[a-z_][a-z0-9_]*$ ]] ||
  die "GOCDHA_DATABASE '$GOCDHA_DATABASE' must be a lower-case SQL identifier"
if [ "$GOCDHA_ROLE" = standby ] && [ -z "$GOCDHA_PEER_HOST" ]; then
  die "GOCDHA_PEER_HOST is not set: a standby needs the primary's address"
fi

if [ -n "${GOCDHA_PG_BINDIR:-}" ]; then
  [ -x "$GOCDHA_PG_BINDIR/postgres" ] || die "GOCDHA_PG_BINDIR '$GOCDHA_PG_BINDIR' holds no postgres binary"
  PATH="$GOCDHA_PG_BINDIR:$PATH"
fi
command -v postgres >/dev/null || die "no postgres binary on PATH (set GOCDHA_PG_BINDIR)"

# Exported for archive_command, restore_command and archive_cleanup_command, which Postgres runs
# through /bin/sh with the postmaster's environment (see pgconfig.py).
export PATH PGDATA GOCDHA_SIDE GOCDHA_ROLE GOCDHA_ARCHIVE_DIR GOCDHA_CONFIG_DIR GOCDHA_SCRIPTS_DIR \
  GOCDHA_SOCKET_DIR GOCDHA_REPLICATION_PASSWORD_FILE GOCDHA_OPERATOR_PASSWORD_FILE \
  GOCDHA_GOCD_PASSWORD_FILE GOCDHA_SUPERUSER_PASSWORD_FILE
umask 077

slot_name="gocdha_${GOCDHA_SIDE}"     # the slot the primary keeps for this side as a standby
peer_slot_name="gocdha_${peer_side}"  # the slot this side keeps for its peer when primary
application_name="gocdha_${GOCDHA_SIDE}"
fence_marker="${PGDATA}.gocdha-fenced"

for file in postgresql.conf pg_hba.conf; do
  [ -r "$GOCDHA_CONFIG_DIR/$file" ] || die "cannot read $file in GOCDHA_CONFIG_DIR '$GOCDHA_CONFIG_DIR'"
done
for file in archive-wal.sh restore-wal.sh; do
  [ -r "$GOCDHA_SCRIPTS_DIR/$file" ] || die "cannot read $file in GOCDHA_SCRIPTS_DIR '$GOCDHA_SCRIPTS_DIR'"
done
[ -d "$GOCDHA_SOCKET_DIR" ] && [ -w "$GOCDHA_SOCKET_DIR" ] ||
  die "GOCDHA_SOCKET_DIR '$GOCDHA_SOCKET_DIR' is not a writable directory"
if [ ! -d "$GOCDHA_ARCHIVE_DIR" ]; then
  # A fresh shared volume is empty: the first instance to start makes wal/ on it. Its parent is
  # the volume's mount point; when that is missing the volume is not mounted, so stop instead.
  archive_parent=$(dirname "$GOCDHA_ARCHIVE_DIR")
  [ -d "$archive_parent" ] ||
    die "WAL archive directory GOCDHA_ARCHIVE_DIR '$GOCDHA_ARCHIVE_DIR' does not exist, nor does '$archive_parent' (is the shared volume mounted?)"
  if mkdir -m 0750 "$GOCDHA_ARCHIVE_DIR" 2>/dev/null; then
    log "created the WAL archive directory $GOCDHA_ARCHIVE_DIR on the shared volume"
  fi
  [ -d "$GOCDHA_ARCHIVE_DIR" ] ||
    die "WAL archive directory GOCDHA_ARCHIVE_DIR '$GOCDHA_ARCHIVE_DIR' does not exist and cannot be created in '$archive_parent'"
fi
probe="$GOCDHA_ARCHIVE_DIR/.gocdha-write-probe.$GOCDHA_SIDE.$$"
if ! (: >"$probe") 2>/dev/null; then
  die "WAL archive directory GOCDHA_ARCHIVE_DIR '$GOCDHA_ARCHIVE_DIR' is not writable (read-only volume or wrong owner)"
fi
rm -f -- "$probe"
pgdata_parent=$(dirname -- "$PGDATA")
[ -d "$pgdata_parent" ] && [ -w "$pgdata_parent" ] ||
  die "the parent directory of PGDATA '$pgdata_parent' is not a writable directory"

# read_password VAR: the password in the file VAR names (trailing newlines dropped).
read_password() {
  local variable=$1 file=${!1} value
  [ -f "$file" ] && [ -r "$file" ] || die "cannot read the password file '$file' named by $variable"
  value=$(<"$file")
  [ -n "$value" ] || die "the password file '$file' named by $variable is empty"
  case "$value" in
    *$'\n'*) die "the password file '$file' named by $variable has more than one line" ;;
  esac
  printf '%s' "$value"
}

# pgpass_escape: ':' and '\' are the two characters a .pgpass field must escape.
pgpass_escape() {
  local value=${1//\\/\\\\}
  printf '%s' "${value//:/\\:}"
}

# --- TLS (docs/architecture.md §17) --------------------------------------------------------------
# The mounted Secret's files are copied into $GOCDHA_SOCKET_DIR/tls: Postgres refuses a key file
# that others may read, and a Secret volume's modes and owner are the kubelet's. The instance guard
# copies them again (in place) when the Secret changes and reloads Postgres (SIGHUP).
tls_dir="$GOCDHA_SOCKET_DIR/tls"
install_tls() {
  local file
  for file in tls.crt tls.key ca.crt; do
    [ -s "$GOCDHA_TLS_SECRET_DIR/$file" ] ||
      die "cannot read $file in GOCDHA_TLS_SECRET_DIR '$GOCDHA_TLS_SECRET_DIR' (the cluster's server certificate Secret)"
  done
  mkdir -p -m 0700 -- "$tls_dir"
  for file in tls.crt tls.key ca.crt; do
    cat -- "$GOCDHA_TLS_SECRET_DIR/$file" >"$tls_dir/$file.new"
    chmod 0600 -- "$tls_dir/$file.new"
    mv -f -- "$tls_dir/$file.new" "$tls_dir/$file"
  done
}
install_tls

superuser_password=$(read_password GOCDHA_SUPERUSER_PASSWORD_FILE)
replication_password=$(read_password GOCDHA_REPLICATION_PASSWORD_FILE)
operator_password=$(read_password GOCDHA_OPERATOR_PASSWORD_FILE)
gocd_password=$(read_password GOCDHA_GOCD_PASSWORD_FILE)

# Two passfiles: the walreceiver's (replication user only) lives as long as the server; the
# script's own (superuser + operator + replication) is removed before postgres starts.
runtime_passfile="$GOCDHA_SOCKET_DIR/.gocdha-replication.pgpass"
script_passfile="$GOCDHA_SOCKET_DIR/.gocdha-entrypoint.$$.pgpass"
printf '*:*:*:gocdha_replication:%s\n' "$(pgpass_escape "$replication_password")" >"$runtime_passfile"
{
  printf '*:*:*:postgres:%s\n' "$(pgpass_escape "$superuser_password")"
  printf '*:*:*:gocdha_operator:%s\n' "$(pgpass_escape "$operator_password")"
  printf '*:*:*:gocdha_replication:%s\n' "$(pgpass_escape "$replication_password")"
  printf '*:*:*:gocd:%s\n' "$(pgpass_escape "$gocd_password")"
} >"$script_passfile"
chmod 0600 "$runtime_passfile" "$script_passfile"
unset superuser_password replication_password operator_password gocd_password
export PGPASSFILE="$script_passfile"
# The private servers below (bootstrap, passwords, recovery) accept no standby: with
# spec.postgres.synchronous their own commits would wait for one forever.
private_server_sync="-c synchronous_standby_names=''"
bootstrap_dir=""
cleanup() {
  rm -f -- "$script_passfile"
  if [ -n "$bootstrap_dir" ] && [ -f "$bootstrap_dir/postmaster.pid" ]; then
    pg_ctl stop -D "$bootstrap_dir" -m immediate -w >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# --- helpers ------------------------------------------------------------------------------------

# conf_quote: a postgresql.conf string literal.
conf_quote() {
  local value=${1//\\/\\\\}
  printf "'%s'" "${value//\'/\'\'}"
}
# conninfo_quote: a libpq keyword/value string literal.
conninfo_quote() {
  local value=${1//\\/\\\\}
  printf "'%s'" "${value//\'/\\\'}"
}

peer_conninfo() { # peer_conninfo USER [extra keyword=value ...]
  local user=$1 address=""
  shift
  # TLS with full verification: the peer's certificate must be signed by the cluster CA and name
  # GOCDHA_PEER_HOST. GOCDHA_PEER_HOSTADDR (optional) is where to connect when the name is not
  # resolvable here; the certificate is still checked against the name.
  if [ -n "${GOCDHA_PEER_HOSTADDR:-}" ]; then
    address="hostaddr=$(conninfo_quote "$GOCDHA_PEER_HOSTADDR") "
  fi
  printf 'host=%s %sport=%s user=%s connect_timeout=5 sslmode=verify-full sslrootcert=%s %s' \
    "$(conninfo_quote "$GOCDHA_PEER_HOST")" "$address" "$GOCDHA_PEER_PORT" "$user" \
    "$(conninfo_quote "$tls_dir/ca.crt")" "$*"
}

# Runs one SQL statement on the peer as the operator role; stdout is the result, stderr the error.
peer_sql() {
  psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$(peer_conninfo gocdha_operator dbname=postgres)" -c "$1"
}

has_data() { [ -s "$1/PG_VERSION" ]; }

# write_instance_conf DIR [LISTEN]: gocdha.conf = an include of the shared settings + this
# instance's settings, rewritten at every start so a restart always picks up the current ConfigMap
# and role. The shared settings (the ConfigMap's postgresql.conf) are copied to $settings_file in
# the socket directory, which the instance guard rewrites when the ConfigMap changes and then
# reloads Postgres (docs/architecture.md §16): a reloadable change does not wait for a restart.
settings_file="$GOCDHA_SOCKET_DIR/gocdha-settings.conf"
write_instance_conf() {
  local dir=$1 listen=${2-$GOCDHA_LISTEN_ADDRESSES}
  cp -- "$GOCDHA_CONFIG_DIR/postgresql.conf" "$settings_file.new"
  chmod 0644 "$settings_file.new"
  mv -f -- "$settings_file.new" "$settings_file"
  {
    echo "# Shared settings: the ConfigMap's postgresql.conf as last loaded (see entrypoint.sh)."
    echo "include $(conf_quote "$settings_file")"
    echo
    echo "# Per instance: written by entrypoint.sh at every start (side $GOCDHA_SIDE)."
    echo "listen_addresses = $(conf_quote "$listen")"
    echo "port = $GOCDHA_PORT"
    echo "unix_socket_directories = $(conf_quote "$GOCDHA_SOCKET_DIR")"
    echo "hba_file = $(conf_quote "$GOCDHA_CONFIG_DIR/pg_hba.conf")"
    echo "ssl_cert_file = $(conf_quote "$tls_dir/tls.crt")"
    echo "ssl_key_file = $(conf_quote "$tls_dir/tls.key")"
    echo "ssl_ca_file = $(conf_quote "$tls_dir/ca.crt")"
    if [ -n "$GOCDHA_PEER_HOST" ]; then
      # Only read while standby.signal exists; harmless on a primary, ready for a demotion.
      echo "primary_conninfo = $(conf_quote "$(peer_conninfo gocdha_replication \
        "passfile=$(conninfo_quote "$runtime_passfile")" \
        "application_name=$application_name" keepalives_idle=10 keepalives_interval=5 keepalives_count=3)")"
      echo "primary_slot_name = $(conf_quote "$slot_name")"
    fi
  } >"$dir/gocdha.conf.new"
  mv -f -- "$dir/gocdha.conf.new" "$dir/gocdha.conf"
  if ! grep -qxF "include 'gocdha.conf'" "$dir/postgresql.conf"; then
    printf "\n# gocd-ha-operator settings (must stay last)\ninclude 'gocdha.conf'\n" >>"$dir/postgresql.conf"
  fi
  if [ -e "$dir/standby.signal" ]; then hot_standby_floor "$dir"; fi
}

# hot_standby_floor DIR: a hot standby must run the settings below at least at the values its
# control file records from the primary (as last replayed), or PostgreSQL refuses to start it
# ("recovery aborted because of insufficient parameter settings") and the container restarts
# forever. That happens when one of them is lowered and the standby restarts before the primary
# has run the lower value (docs/architecture.md §16; the operator restarts the primary first, but
# a standby restarted by anything else, or by an older operator, gets here). Such a setting is
# started at the recorded value instead, and named in gocdha.raised_settings: the operator
# restarts this standby again once the primary runs the lower value and it has been replayed.
# The list is api/constants.py's HOT_STANDBY_SENSITIVE_SETTINGS (a unit test compares them).
hot_standby_sensitive="max_connections max_locks_per_transaction max_prepared_transactions max_wal_senders max_worker_processes"
hot_standby_floor() {
  local dir=$1 controldata name field recorded configured raised=""
  controldata=$(pg_controldata -D "$dir" 2>/dev/null) || return 0
  for name in $hot_standby_sensitive; do
    case $name in
      max_prepared_transactions) field="max_prepared_xacts setting" ;;
      max_locks_per_transaction) field="max_locks_per_xact setting" ;;
      *) field="$name setting" ;;
    esac
    recorded=$(sed -n "s/^$field: *//p" <<<"$controldata")
    configured=$(postgres -D "$dir" -C "$name" 2>/dev/null) || continue
    if [[ $recorded =~ ^[0-9]+$ && $configured =~ ^[0-9]+$ ]] && ((recorded > configured)); then
      log "starting this standby with $name = $recorded, the primary's value in its control file, not $configured: a hot standby refuses to run below it (restarted with $configured once the primary runs it)"
      echo "$name = $recorded" >>"$dir/gocdha.conf"
      raised="${raised:+$raised,}$name"
    fi
  done
  if [ -n "$raised" ]; then
    echo "gocdha.raised_settings = $(conf_quote "$raised")" >>"$dir/gocdha.conf"
  fi
}

fence() { # fence REASON: make sure this data dir can only start in recovery.
  if [ ! -e "$fence_marker" ]; then
    printf 'fenced at %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >"$fence_marker"
    sync -- "$fence_marker" 2>/dev/null || true
  fi
  : >"$PGDATA/standby.signal"
  sync -- "$PGDATA/standby.signal" 2>/dev/null || true
}

wait_for_primary() {
  local started=$SECONDS deadline=$((SECONDS + GOCDHA_WAIT_PRIMARY_SECONDS)) next_log=0 out state
  while :; do
    if pg_isready -q -d "$(peer_conninfo gocdha_operator dbname=postgres)" -t 3; then
      if out=$(peer_sql "SELECT pg_is_in_recovery()" 2>&1); then
        [ "$out" = f ] && break
        state="is in recovery (not a primary yet)"
      else
        case "$out" in
          *"password authentication failed"* | *"no pg_hba.conf entry"* | *"is not permitted to log in"*)
            die "the primary at $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT rejected the operator role gocdha_operator (check GOCDHA_OPERATOR_PASSWORD_FILE): ${out//$'\n'/ }"
            ;;
        esac
        state="is not answering queries yet (${out//$'\n'/ })"
      fi
    else
      state="is not accepting connections"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "the primary at $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT $state after ${GOCDHA_WAIT_PRIMARY_SECONDS}s (GOCDHA_WAIT_PRIMARY_SECONDS); giving up"
    fi
    if [ "$SECONDS" -ge "$next_log" ]; then
      log "waiting for the primary at $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT: it $state ($((SECONDS - started))s of ${GOCDHA_WAIT_PRIMARY_SECONDS}s)"
      next_log=$((SECONDS + 10))
    fi
    sleep 1
  done
  # The replication user is checked too: a wrong password must fail here, clearly, and not as a
  # pg_basebackup error or an endless walreceiver retry loop.
  if ! out=$(psql -X -q -d "$(peer_conninfo gocdha_replication replication=true)" \
    -c "IDENTIFY_SYSTEM" 2>&1 >/dev/null); then
    die "the primary at $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT refused a replication connection as gocdha_replication (check GOCDHA_REPLICATION_PASSWORD_FILE): ${out//$'\n'/ }"
  fi
  log "the primary at $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT is up"
}

ensure_peer_slot() { # the primary keeps a physical slot for this side (idempotent)
  local out
  if ! out=$(peer_sql "SELECT count(*) FROM (SELECT pg_create_physical_replication_slot('$slot_name', true)
      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot_name')) AS created" 2>&1); then
    die "could not create the replication slot $slot_name on the primary: ${out//$'\n'/ }"
  fi
  [ "$out" = 1 ] && log "created the replication slot $slot_name on the primary"
  return 0
}

base_backup() { # a fresh copy of the primary into PGDATA, built aside and renamed into place
  local staging="${PGDATA}.gocdha-basebackup"
  if [ -e "$staging" ]; then
    log "removing '$staging', an unfinished base backup of an earlier attempt (never used as a data dir)"
    rm -rf -- "$staging"
  fi
  log "taking a base backup from $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT with slot $slot_name"
  if ! pg_basebackup -D "$staging" -d "$(peer_conninfo gocdha_replication "application_name=${application_name}_basebackup")" \
    -S "$slot_name" -X stream -c fast --no-password; then
    rm -rf -- "$staging"
    die "pg_basebackup from $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT failed (see above)"
  fi
  : >"$staging/standby.signal"
  write_instance_conf "$staging"
  sync -f -- "$staging/PG_VERSION" 2>/dev/null || true
  if [ -d "$PGDATA" ]; then
    rmdir -- "$PGDATA" || die "PGDATA '$PGDATA' is in the way of the base backup and not empty"
  fi
  mv -- "$staging" "$PGDATA"
  rm -f -- "$fence_marker"
  log "base backup done: $PGDATA is a standby of $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT"
}

init_primary() {
  local staging="${PGDATA}.gocdha-initdb"
  if [ -e "$fence_marker" ]; then
    die "this side was fenced as a standby ($(cat -- "$fence_marker")); refusing to create a new, empty database as primary. Restore its data or promote the other side"
  fi
  if compgen -G "$GOCDHA_ARCHIVE_DIR/[0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F]*" >/dev/null; then
    die "the WAL archive '$GOCDHA_ARCHIVE_DIR' already holds WAL of a database, but PGDATA '$PGDATA' is empty: refusing to create a new, empty database that would overwrite its history. Restore the data dir, or point GOCDHA_ARCHIVE_DIR at an empty directory for a new cluster"
  fi
  if [ -e "$staging" ]; then
    log "removing '$staging', an unfinished initdb of an earlier attempt (never used as a data dir)"
    rm -rf -- "$staging"
  fi
  log "initialising a new database cluster"
  initdb -D "$staging" --username=postgres --pwfile="$GOCDHA_SUPERUSER_PASSWORD_FILE" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C --data-checksums >/dev/null
  write_instance_conf "$staging" ""
  # The bootstrap server listens on no TCP address and on a private socket directory: nobody,
  # not even a readiness probe, may mistake it for the finished instance.
  local bootstrap_socket_dir="$GOCDHA_SOCKET_DIR/.gocdha-bootstrap"
  mkdir -p -m 0700 -- "$bootstrap_socket_dir"
  bootstrap_dir=$staging
  pg_ctl start -D "$staging" -w -t 120 -s \
    -o "-c listen_addresses='' -c unix_socket_directories='$bootstrap_socket_dir' $private_server_sync"
  psql -X -q -v ON_ERROR_STOP=1 -h "$bootstrap_socket_dir" -p "$GOCDHA_PORT" -U postgres -d postgres \
    -v dbname="$GOCDHA_DATABASE" -v peer_slot="$peer_slot_name" -f - <<'SQL'
-- A failing statement must not be written to the server log: it may carry a password.
SET log_min_error_statement = 'panic';
SET log_statement = 'none';
\set replication_password `cat "$GOCDHA_REPLICATION_PASSWORD_FILE"`
\set operator_password `cat "$GOCDHA_OPERATOR_PASSWORD_FILE"`
\set gocd_password `cat "$GOCDHA_GOCD_PASSWORD_FILE"`
-- Streaming (1) + pg_basebackup (2) + a spare for a reconnect or a second backup attempt.
CREATE ROLE gocdha_replication WITH LOGIN REPLICATION CONNECTION LIMIT 5 PASSWORD :'replication_password';
-- The operator observes, checkpoints, promotes and keeps slots (slot functions need REPLICATION;
-- pg_hba.conf admits replication connections for gocdha_replication only). The entrypoint of a
-- rejoining side uses it as the pg_rewind source user.
CREATE ROLE gocdha_operator WITH LOGIN REPLICATION CONNECTION LIMIT 10 PASSWORD :'operator_password';
GRANT pg_monitor TO gocdha_operator;
-- A switchover ends the old primary's client sessions before it takes the last LSN: no commit
-- can then land after the point the standby is waited for (pg_signal_backend cannot touch
-- superuser sessions).
GRANT pg_signal_backend TO gocdha_operator;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote(boolean, integer) TO gocdha_operator;
SELECT current_setting('server_version_num')::int >= 150000 AS has_pg_checkpoint \gset
\if :has_pg_checkpoint
GRANT pg_checkpoint TO gocdha_operator;
\endif
-- What pg_rewind needs from its source as a non-superuser (every overload of each function).
DO $$
DECLARE fn regprocedure;
BEGIN
  FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace
              AND p.proname IN ('pg_ls_dir', 'pg_stat_file', 'pg_read_binary_file')
  LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO gocdha_operator', fn);
  END LOOP;
END
$$;
CREATE ROLE gocd WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT PASSWORD :'gocd_password';
CREATE DATABASE :"dbname" OWNER gocd ENCODING 'UTF8' TEMPLATE template0;
SELECT pg_create_physical_replication_slot(:'peer_slot', true) \gset
\connect :"dbname"
-- GoCD needs these; created here so that the gocd role never needs SUPERUSER.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS citext;
SQL
  pg_ctl stop -D "$staging" -m fast -w -s
  bootstrap_dir=""
  rmdir -- "$bootstrap_socket_dir" 2>/dev/null || true
  mv -- "$staging" "$PGDATA" 2>/dev/null || {
    rmdir -- "$PGDATA" 2>/dev/null || die "PGDATA '$PGDATA' is in the way of the new cluster and not empty"
    mv -- "$staging" "$PGDATA"
  }
  log "new database cluster ready: database $GOCDHA_DATABASE, slot $peer_slot_name for side $peer_side"
}

rejoin() { # this former primary follows the peer: pg_rewind, else a fresh base backup
  local state out aside
  wait_for_primary
  # pg_rewind reads the source's timeline from its control file, which a fresh promotion only
  # updates at its next checkpoint.
  if ! out=$(peer_sql "CHECKPOINT" 2>&1); then
    log "could not run CHECKPOINT on the primary (${out//$'\n'/ }); pg_rewind may see a stale timeline"
  fi
  ensure_peer_slot
  write_instance_conf "$PGDATA"
  state=$(pg_controldata -D "$PGDATA" | sed -n 's/^Database cluster state: *//p')
  if [ "$state" != "shut down" ] && [ "$state" != "shut down in recovery" ]; then
    # pg_rewind first runs crash recovery in single-user mode, which refuses standby.signal.
    # The fence marker keeps this dir fenced meanwhile.
    log "data dir was not shut down cleanly ($state): pg_rewind will run crash recovery first"
    rm -f -- "$PGDATA/standby.signal"
  fi
  log "rewinding this former primary from $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT"
  if pg_rewind --target-pgdata="$PGDATA" --restore-target-wal \
    --source-server="$(peer_conninfo gocdha_operator dbname=postgres)"; then
    : >"$PGDATA/standby.signal"
    write_instance_conf "$PGDATA"
    rm -f -- "$fence_marker"
    log "pg_rewind done: this side follows $GOCDHA_PEER_HOST:$GOCDHA_PEER_PORT"
    return
  fi
  aside="${PGDATA}.gocdha-old-$(date -u +%Y%m%dT%H%M%SZ)"
  log "pg_rewind failed; moving the old data dir aside to '$aside' (kept: delete it yourself once it is no longer needed) and taking a fresh base backup"
  mv -- "$PGDATA" "$aside"
  base_backup
}

# own_timeline: the newest timeline this data dir has been on: its control file's, or a newer
# one whose history file is in its own pg_wal (a promotion writes it at once; a crash before the
# next checkpoint leaves the control file behind).
own_timeline() {
  local tli file name
  tli=$(pg_controldata -D "$PGDATA" | sed -n "s/^Latest checkpoint's TimeLineID: *//p")
  [[ "$tli" =~ ^[0-9]+$ ]] || die "cannot read the timeline of '$PGDATA' with pg_controldata"
  for file in "$PGDATA"/pg_wal/*.history; do
    [ -e "$file" ] || continue
    name=$(basename -- "$file" .history)
    [[ "$name" =~ ^[0-9A-F]{8}$ ]] || continue
    [ "$((16#$name))" -gt "$tli" ] && tli=$((16#$name))
  done
  echo "$tli"
}

# newest_archived_timeline: the highest timeline with a history file in the shared WAL archive
# (0 when there is none). Every promotion archives one; pg_archivecleanup never removes them.
newest_archived_timeline() {
  local newest=0 file name
  for file in "$GOCDHA_ARCHIVE_DIR"/*.history; do
    [ -e "$file" ] || continue
    name=$(basename -- "$file" .history)
    [[ "$name" =~ ^[0-9A-F]{8}$ ]] || continue
    [ "$((16#$name))" -gt "$newest" ] && newest=$((16#$name))
  done
  echo "$newest"
}

# apply_passwords: make every role's password the one in its mounted Secret file. A resource
# re-created over its retained claims gets new generated Secrets; without this its database would
# refuse them all. Runs on a private bootstrap server (no TCP listener, a 0700 socket directory, an
# hba_file of its own): each role first tries to log in with its file's password (scram, through
# the script's passfile); only a role that fails gets ALTER ROLE, by the superuser over trust on
# that private socket (database template1 only), so a changed superuser password is applied too.
# Unchanged passwords write nothing: a restart does not add WAL.
apply_passwords() {
  local socket="$GOCDHA_SOCKET_DIR/.gocdha-bootstrap" hba role stale=() flags=()
  mkdir -p -m 0700 -- "$socket"
  hba="$socket/pg_hba.conf"
  printf 'local template1 postgres trust\nlocal all all scram-sha-256\n' >"$hba"
  write_instance_conf "$PGDATA" "" # this instance's port: the dir may be a copy of the peer's
  bootstrap_dir=$PGDATA
  pg_ctl start -D "$PGDATA" -w -t 3600 -s -l "$socket/bootstrap.log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$socket' -c hba_file='$hba' $private_server_sync" ||
    die "could not start postgres privately to apply the passwords: $(tail -n 5 "$socket/bootstrap.log" 2>/dev/null | tr '\n' ' ')"
  for role in postgres gocdha_replication gocdha_operator gocd; do
    if psql -X -q -w -h "$socket" -p "$GOCDHA_PORT" -U "$role" -d postgres -c "SELECT 1" \
      >/dev/null 2>&1; then
      flags+=(-v "alter_$role=false")
    else
      flags+=(-v "alter_$role=true")
      stale+=("$role")
    fi
  done
  if [ "${#stale[@]}" -gt 0 ]; then
    if ! psql -X -q -v ON_ERROR_STOP=1 -h "$socket" -p "$GOCDHA_PORT" -U postgres -d template1 \
      "${flags[@]}" -f - <<'SQL'; then
-- A failing statement must not be written to the server log: it carries a password.
SET log_min_error_statement = 'panic';
SET log_statement = 'none';
\if :alter_postgres
\set password `cat "$GOCDHA_SUPERUSER_PASSWORD_FILE"`
ALTER ROLE postgres PASSWORD :'password';
\endif
\if :alter_gocdha_replication
\set password `cat "$GOCDHA_REPLICATION_PASSWORD_FILE"`
ALTER ROLE gocdha_replication PASSWORD :'password';
\endif
\if :alter_gocdha_operator
\set password `cat "$GOCDHA_OPERATOR_PASSWORD_FILE"`
ALTER ROLE gocdha_operator PASSWORD :'password';
\endif
\if :alter_gocd
\set password `cat "$GOCDHA_GOCD_PASSWORD_FILE"`
ALTER ROLE gocd PASSWORD :'password';
\endif
SQL
      die "could not apply the passwords from the Secret files to the roles (see above)"
    fi
    log "applied the passwords from the Secret files to the roles: ${stale[*]}"
  fi
  pg_ctl stop -D "$PGDATA" -m fast -w -s
  bootstrap_dir=""
  rm -rf -- "$socket"
}

# recover_primary: the first primary of a cluster created with spec.bootstrap.recovery gets its
# data from a backup (recover.sh verifies it before writing anything), then replays the source's
# archive to the target (or its end) and promotes, all on a private server (no TCP listener, a
# 0700 socket): nobody connects to a half-recovered database, and the roles' passwords are applied
# afterwards like at every start (a promoted database accepts ALTER ROLE; one in recovery does not).
recover_primary() {
  local socket="$GOCDHA_SOCKET_DIR/.gocdha-recovery" hba state deadline
  if [ -e "$fence_marker" ]; then
    die "this side was fenced as a standby ($(cat -- "$fence_marker")); refusing to recover a backup over it"
  fi
  if compgen -G "$GOCDHA_ARCHIVE_DIR/[0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F]*" >/dev/null; then
    die "the WAL archive '$GOCDHA_ARCHIVE_DIR' already holds WAL of a database, but PGDATA '$PGDATA' is empty: refusing to recover a backup into a cluster that has a history of its own"
  fi
  log "recovering this primary from the backups in $GOCDHA_RECOVERY_BACKUP_DIR"
  GOCDHA_BACKUP_DIR="$GOCDHA_RECOVERY_BACKUP_DIR" bash "$GOCDHA_SCRIPTS_DIR/recover.sh" ||
    die "recovery from a backup failed (the reason is above); nothing was started"
  mkdir -p -m 0700 -- "$socket"
  hba="$socket/pg_hba.conf"
  printf 'local postgres postgres trust\n' >"$hba"
  write_instance_conf "$PGDATA" ""
  bootstrap_dir=$PGDATA
  pg_ctl start -D "$PGDATA" -w -t 3600 -s -l "$socket/recovery.log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$socket' -c hba_file='$hba' $private_server_sync" ||
    die "postgres did not start to replay the backup: $(tail -n 5 "$socket/recovery.log" 2>/dev/null | tr '\n' ' ')"
  deadline=$((SECONDS + ${GOCDHA_RECOVERY_TIMEOUT_SECONDS:-86400}))
  while :; do
    state=$(psql -X -A -t -q -w -h "$socket" -p "$GOCDHA_PORT" -U postgres -d postgres \
      -c "SELECT pg_is_in_recovery()" 2>/dev/null) || state=""
    [ "$state" = f ] && break
    pg_ctl status -D "$PGDATA" >/dev/null 2>&1 ||
      die "postgres stopped while replaying the backup: $(tail -n 5 "$socket/recovery.log" 2>/dev/null | tr '\n' ' ')"
    [ "$SECONDS" -lt "$deadline" ] || die "recovery from the backup did not finish in time"
    sleep 1
  done
  log "recovery from the backup finished: promoted on a new timeline"
  pg_ctl stop -D "$PGDATA" -m fast -w -s
  bootstrap_dir=""
  rm -f -- "$PGDATA/gocdha-bootstrap.conf"
  rm -rf -- "$socket"
}

# --- lease grant (docs/operator.md, "What fences a primary") ---------------------------------------
# With GOCDHA_LEASE_GRANT_FILE set (pods that run the instance guard), a primary starts only while
# the guard has written a grant in the future into that file: the Unix time until which this side
# holds the Lease <name>-primary. The guard stops Postgres itself when it cannot renew; this wait
# keeps a restarted container from coming back as a primary without the Lease.
lease_grant_valid() {
  local grant now
  grant=$(cat -- "$GOCDHA_LEASE_GRANT_FILE" 2>/dev/null) || return 1
  grant=${grant%%.*}
  [[ $grant =~ ^[0-9]+$ ]] || return 1
  now=$(date +%s)
  ((grant > now))
}

wait_for_lease_grant() {
  [ -n "${GOCDHA_LEASE_GRANT_FILE:-}" ] || return 0
  local waited=0 limit=${GOCDHA_WAIT_LEASE_SECONDS:-600}
  # The request file tells the guard that a primary is waiting to start (it renews for a Postgres
  # that is down only while asked to, and for one Lease duration after).
  until touch -- "$GOCDHA_LEASE_GRANT_FILE.request" && lease_grant_valid; do
    if ((waited >= limit)); then
      die "no lease grant in $GOCDHA_LEASE_GRANT_FILE after ${limit}s: this side does not hold the Lease, so it must not start as a primary"
    fi
    if ((waited % 10 == 0)); then
      log "waiting for the instance guard's lease grant ($GOCDHA_LEASE_GRANT_FILE) before starting as primary"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "lease grant valid until $(cat -- "$GOCDHA_LEASE_GRANT_FILE")"
}

start_postgres() { # start_postgres MODE
  if [ "$1" = primary ]; then wait_for_lease_grant; fi
  if [ ! -e "$PGDATA/recovery.signal" ] && [ -e "$PGDATA/gocdha-bootstrap.conf" ]; then
    # Recovery from a backup has finished: its settings (the source's archive) must not apply to
    # this data dir ever again, not even as a standby.
    rm -f -- "$PGDATA/gocdha-bootstrap.conf"
    log "recovery from a backup finished earlier: removed its settings (gocdha-bootstrap.conf)"
  fi
  write_instance_conf "$PGDATA"
  rm -f -- "$script_passfile"
  trap - EXIT
  log "starting postgres as $1 on port $GOCDHA_PORT"
  exec postgres -D "$PGDATA"
}

# --- main ---------------------------------------------------------------------------------------

if ! has_data "$PGDATA" && [ -d "$PGDATA" ] && [ -n "$(ls -A -- "$PGDATA")" ]; then
  die "PGDATA '$PGDATA' is not empty but holds no Postgres data dir (no PG_VERSION); refusing to touch it"
fi

if [ "$GOCDHA_ROLE" = primary ]; then
  if ! has_data "$PGDATA"; then
    if [ -n "${GOCDHA_RECOVERY_BACKUP_DIR:-}" ]; then
      recover_primary # then started below like any primary (passwords applied first)
    else
      init_primary
      start_postgres primary
    fi
  fi
  if [ -e "$fence_marker" ]; then
    die "GOCDHA_ROLE is primary but a rejoin of this data dir as a standby did not finish ($(cat -- "$fence_marker")); it may be half rewound and must not run as a primary. Run this side as a standby to finish the rejoin"
  fi
  if [ -e "$PGDATA/standby.signal" ]; then
    log "GOCDHA_ROLE is primary but this data dir is a standby's (standby.signal present):" \
      "starting in recovery. Promotion is done with pg_promote() by the operator, never by a restart"
    start_postgres "standby (role says primary; waiting for pg_promote)"
  fi
  # The archive is the arbiter a Kubernetes object cannot be: a role from a stale status or
  # ConfigMap says "primary", but a newer timeline in the archive means the other side was
  # promoted after this one last ran. Starting here would make two primaries.
  timeline=$(own_timeline)
  newest=$(newest_archived_timeline)
  if [ "$newest" -gt "$timeline" ]; then
    [ -n "$GOCDHA_PEER_HOST" ] ||
      die "refusing to start as primary: the WAL archive holds timeline $newest, this data dir is on timeline $timeline (a former primary), and GOCDHA_PEER_HOST is not set to rejoin"
    log "refusing to start as primary: the WAL archive holds the history of timeline $newest but" \
      "this data dir is on timeline $timeline, so it is a former primary; rejoining as a standby"
    fence "GOCDHA_ROLE is primary but timeline $newest in the archive is newer than this data dir's $timeline"
    rejoin
    start_postgres "standby (role says primary; a newer timeline exists)"
  fi
  apply_passwords
  start_postgres primary
fi

# GOCDHA_ROLE = standby
if ! has_data "$PGDATA"; then
  wait_for_primary
  ensure_peer_slot
  base_backup
elif [ -e "$fence_marker" ] || [ ! -e "$PGDATA/standby.signal" ]; then
  # A former primary (or a rejoin that did not finish): fence first, so that whatever happens
  # next this dir cannot come back as a primary.
  fence "GOCDHA_ROLE is standby and the data dir was a primary's"
  log "this data dir was a primary's: fenced with standby.signal and $fence_marker"
  rejoin
fi
start_postgres standby
