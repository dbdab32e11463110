-- Leased budgets (src/cluster/budget.rs): a shared limit that nodes lease
-- shares of and spend in memory. The first user is the daily quota
-- (`emails_per_day:<day>`); cluster-wide rates and connection counts follow.
--
-- `budgets` has one row per (tenant, budget): the lock that grants and exact
-- (locked) decisions take first, and whether the budget is closed: near its
-- limit every lease was revoked and users decide under this row's lock while
-- the limit stays at or below `closed_at_limit`.
CREATE TABLE budgets (
    tenant_id uuid NOT NULL,
    budget text NOT NULL,
    closed_at_limit bigint,
    -- The row (and its leases) may be deleted after this.
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, budget)
);
CREATE INDEX budgets_expiry ON budgets (expires_at);

-- One lease per holder (a process) and budget: `granted` units of which the
-- holder last reported `spent`. A lease is live until `expires_at` (renewed
-- by its holder); a dead holder's lease lapses and its unspent part returns.
-- `lease` is new each time the row is created, so a revoked lease is never
-- mistaken for its successor.
CREATE TABLE budget_leases (
    tenant_id uuid NOT NULL,
    budget text NOT NULL,
    holder uuid NOT NULL,
    lease uuid NOT NULL,
    granted bigint NOT NULL CHECK (granted >= 0),
    spent bigint NOT NULL CHECK (spent >= 0),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, budget, holder),
    FOREIGN KEY (tenant_id, budget) REFERENCES budgets (tenant_id, budget) ON DELETE CASCADE
);
