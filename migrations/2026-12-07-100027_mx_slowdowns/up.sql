-- A site's "slow down" (421 / 4.7.x) seen by one node, for the others
-- (issue 27, src/delivery/mx/slowdowns.rs): one row per (egress pool, site),
-- keyed by the name of the site's shared budgets. `seq` counts the
-- slow-downs; every node polls the rows changed within `slowdown_secs` and
-- halves its rate once per slow-down it has not applied yet.
CREATE TABLE mx_slowdowns (
    site text PRIMARY KEY,
    seq bigint NOT NULL,
    slowed_at timestamptz NOT NULL
);
CREATE INDEX mx_slowdowns_slowed_at ON mx_slowdowns (slowed_at);
COMMENT ON TABLE mx_slowdowns IS
    'postline:reference platform-wide delivery state per destination site, no tenant; rare writes (one per 421 from a site)';
