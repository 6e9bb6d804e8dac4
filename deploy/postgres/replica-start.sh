#!/bin/sh
# The standby: cloned from the primary once (pg_basebackup --write-recovery-conf writes
# standby.signal and primary_conninfo), then a hot standby replaying the primary's WAL
# through the slot `primary-init.sh` created. Runs as the postgres user.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # The primary may still be initialising (its first start listens on a socket only).
  until PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup --pgdata="$PGDATA" \
      --host=postgres --username=replicator --slot=shadoweval_replica \
      --wal-method=stream --write-recovery-conf --checkpoint=fast; do
    echo "replica: waiting for the primary" >&2
    sleep 2
  done
  chmod 0700 "$PGDATA"
fi
# hot_standby_feedback: the primary's vacuum keeps rows a long analytics read still needs,
# instead of the standby cancelling that read.
exec postgres -c hot_standby=on -c hot_standby_feedback=on
