#!/usr/bin/env bash
# Placeholder: the Postgres instance scripts are written in a later change.
echo "archive-wal.sh: not implemented yet" >&2
exit 1
