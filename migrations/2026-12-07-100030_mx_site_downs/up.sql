-- A site marked down by one node (every MX host unreachable), for the others
-- (issue 27, src/delivery/mx/downs.rs): one row per (egress pool, site),
-- keyed by the name of the site's shared budgets. Every node reads the rows
-- still down once a second (with the slow-downs) and defers the site's mail
-- until `down_until` without dialling it.
CREATE TABLE mx_site_downs (
    site text PRIMARY KEY,
    down_until timestamptz NOT NULL,
    marked_at timestamptz NOT NULL
);
CREATE INDEX mx_site_downs_down_until ON mx_site_downs (down_until);
COMMENT ON TABLE mx_site_downs IS
    'postline:reference platform-wide delivery state per destination site, no tenant; rare writes (one per site found unreachable)';
