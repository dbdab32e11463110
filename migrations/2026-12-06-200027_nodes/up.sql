-- The node registry (src/cluster/node.rs): every process (`api`, `worker`,
-- `serve`) registers itself and heartbeats; one that misses
-- `cluster.node_timeout_secs` of heartbeats (or stopped cleanly) is `gone`,
-- and the live nodes delete its budget leases. `id` is the process's budget
-- holder id, so its leases are found by it.
CREATE TABLE nodes (
    id uuid PRIMARY KEY,
    hostname text NOT NULL,
    roles text[] NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stopped_at timestamptz
);
CREATE INDEX nodes_heartbeat ON nodes (heartbeat_at);
COMMENT ON TABLE nodes IS 'postline:reference the processes of the installation, not any tenant''s';

-- Shard-ready schema (issue 27): platform-wide tables are reference tables.
COMMENT ON TABLE oauth_signing_keys IS 'postline:reference the platform''s token signing keys (the JWKS), one set for every tenant';
