-- Issue 17: the web console's users, sessions and invitations.

-- Platform admins (role admin, no tenant) and tenant users (owner, developer,
-- viewer of one tenant). Admins belong to no tenant, so tenant_id is nullable
-- and cannot lead the primary key (docs/ARCHITECTURE.md "Deviations", as for
-- audit_log); a tenant's users are read through console_users_tenant.
CREATE TABLE console_users (
    id            uuid PRIMARY KEY,
    tenant_id     uuid REFERENCES tenants (id),
    email         text NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
    role          text NOT NULL CHECK (role IN ('admin', 'owner', 'developer', 'viewer')),
    -- argon2id PHC; NULL until the invitation link was used.
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'admin') = (tenant_id IS NULL))
);
CREATE UNIQUE INDEX console_users_email ON console_users (email);
CREATE INDEX console_users_tenant ON console_users (tenant_id, created_at, id);

-- One row per signed-in browser. The cookie holds a random token; only its
-- SHA-256 is stored, so a read of this table signs nobody in.
CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    -- The form token of this session (CSRF), sent back with every POST.
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- One-time links to set a password; the token's SHA-256 only.
CREATE TABLE console_invitations (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX console_invitations_user ON console_invitations (user_id);
