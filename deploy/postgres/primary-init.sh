#!/bin/sh
# Runs once, when the primary's data directory is first initialised
# (/docker-entrypoint-initdb.d): the role and the physical slot the standby streams through.
# For a primary initialised before this file existed, run the same statements by hand.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD}';
SELECT pg_create_physical_replication_slot('shadoweval_replica');
SQL
# The image's pg_hba.conf lets every user reach every database, but not replication.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
