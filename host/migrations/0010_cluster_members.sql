-- The hosts of a deployment (issue 16): each writes its heartbeat every
-- LEASE_TTL/3; one whose heartbeat is older than LEASE_TTL is not live.
CREATE TABLE cluster_members (
    id uuid PRIMARY KEY,
    address text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
