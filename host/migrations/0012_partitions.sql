-- Partitioned ownership: patients map to PARTITIONS partitions, each
-- (plugin, partition) has one owner at a time, and checkpoints move per
-- partition. Rows of before go to partition 0; the host spreads them over
-- the partitions when it first records the layout (store::layout).
ALTER TABLE checkpoints ADD COLUMN partition integer NOT NULL DEFAULT 0;
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_pkey;
ALTER TABLE checkpoints ADD PRIMARY KEY (plugin, partition);

-- How many partitions the checkpoints are kept for: one row, written by
-- the first host, changed only by a planned repartition.
CREATE TABLE partitioning (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    partitions  integer NOT NULL CHECK (partitions BETWEEN 1 AND 1024),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A patient's partition, as the host computes it (cluster::partition):
-- the first four bytes of md5(patient id), big-endian, modulo the count;
-- no patient counts as the empty id.
CREATE FUNCTION projector_partition(patient text, partitions integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (('x' || substr(md5(coalesce(patient, '')), 1, 8))::bit(32)::bigint % partitions)::integer
$$;
