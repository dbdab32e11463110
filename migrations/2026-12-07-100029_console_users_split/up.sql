-- Ready to shard by tenant (issue 27), the console's users: platform admins
-- move out of `console_users` into `platform_console_users` (a reference
-- table); tenant users are keyed (tenant_id, id). E-mail addresses stay
-- unique across the platform through `console_user_directory` (a reference
-- table), which the sign-in reads first to find where the user lives.
-- Sessions, invitations and sign-in challenges split the same way; their
-- cookie or link token names its owner (src/console/tokens.rs), so a lookup
-- is (tenant_id, token_hash) on one shard. Existing rows are moved, not
-- dropped (tokens issued before this carry no owner and are still found).

CREATE TABLE platform_console_users (
    id              uuid PRIMARY KEY,
    email           text NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
    role            text NOT NULL DEFAULT 'admin' CHECK (role = 'admin'),
    password_hash   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    totp_secret_enc bytea,
    totp_enabled    boolean NOT NULL DEFAULT false,
    totp_last_step  bigint,
    CONSTRAINT platform_console_users_totp_enabled_has_secret
        CHECK (NOT totp_enabled OR totp_secret_enc IS NOT NULL)
);
COMMENT ON TABLE platform_console_users IS
    'postline:reference the platform''s console users (admins), who belong to no tenant';

CREATE TABLE console_user_directory (
    email      text PRIMARY KEY,
    tenant_id  uuid
);
COMMENT ON TABLE console_user_directory IS
    'postline:reference whose each console e-mail address is (NULL: a platform admin): the sign-in reads it before it knows the tenant, and its key keeps addresses unique platform-wide';

CREATE TABLE platform_console_sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES platform_console_users (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX platform_console_sessions_user ON platform_console_sessions (user_id);
CREATE INDEX platform_console_sessions_expiry ON platform_console_sessions (expires_at);
COMMENT ON TABLE platform_console_sessions IS
    'postline:reference console sessions of platform admins (by the SHA-256 of the cookie token)';

CREATE TABLE platform_console_invitations (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES platform_console_users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX platform_console_invitations_user ON platform_console_invitations (user_id);
COMMENT ON TABLE platform_console_invitations IS
    'postline:reference one-time password links of platform admins (by the SHA-256 of the token)';

CREATE TABLE platform_console_login_challenges (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES platform_console_users (id) ON DELETE CASCADE,
    failures    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX platform_console_login_challenges_user ON platform_console_login_challenges (user_id);
CREATE INDEX platform_console_login_challenges_expiry ON platform_console_login_challenges (expires_at);
COMMENT ON TABLE platform_console_login_challenges IS
    'postline:reference pending TOTP sign-ins of platform admins (by the SHA-256 of the cookie token)';

-- Move the admins and what hangs off them.
INSERT INTO platform_console_users
    (id, email, role, password_hash, created_at, totp_secret_enc, totp_enabled, totp_last_step)
SELECT id, email, role, password_hash, created_at, totp_secret_enc, totp_enabled, totp_last_step
FROM console_users WHERE tenant_id IS NULL;
INSERT INTO console_user_directory (email, tenant_id) SELECT email, tenant_id FROM console_users;
INSERT INTO platform_console_sessions (token_hash, user_id, csrf_token, created_at, expires_at)
SELECT s.token_hash, s.user_id, s.csrf_token, s.created_at, s.expires_at
FROM console_sessions s JOIN platform_console_users u ON u.id = s.user_id;
INSERT INTO platform_console_invitations (token_hash, user_id, created_at, expires_at, used_at)
SELECT i.token_hash, i.user_id, i.created_at, i.expires_at, i.used_at
FROM console_invitations i JOIN platform_console_users u ON u.id = i.user_id;
INSERT INTO platform_console_login_challenges (token_hash, user_id, failures, created_at, expires_at)
SELECT c.token_hash, c.user_id, c.failures, c.created_at, c.expires_at
FROM console_login_challenges c JOIN platform_console_users u ON u.id = c.user_id;
-- Cascades to the moved sessions, invitations and challenges.
DELETE FROM console_users WHERE tenant_id IS NULL;

-- Tenant users: keyed (tenant_id, id), the address unique within the
-- tenant here (across tenants: the directory).
ALTER TABLE console_sessions DROP CONSTRAINT console_sessions_user_id_fkey;
ALTER TABLE console_invitations DROP CONSTRAINT console_invitations_user_id_fkey;
ALTER TABLE console_login_challenges DROP CONSTRAINT console_login_challenges_user_id_fkey;
ALTER TABLE console_users DROP CONSTRAINT console_users_check;
ALTER TABLE console_users ADD CONSTRAINT console_users_tenant_role CHECK (role <> 'admin');
ALTER TABLE console_users ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE console_users DROP CONSTRAINT console_users_pkey;
ALTER TABLE console_users ADD PRIMARY KEY (tenant_id, id);
DROP INDEX console_users_email;
ALTER TABLE console_users ADD CONSTRAINT console_users_tenant_email UNIQUE (tenant_id, email);

-- Their sessions, invitations and challenges carry the user's tenant and
-- lead their keys with it. The index on token_hash alone serves tokens
-- issued before this migration, which name no owner.
ALTER TABLE console_sessions ADD COLUMN tenant_id uuid;
UPDATE console_sessions s SET tenant_id = u.tenant_id FROM console_users u WHERE u.id = s.user_id;
ALTER TABLE console_sessions ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE console_sessions DROP CONSTRAINT console_sessions_pkey;
ALTER TABLE console_sessions ADD PRIMARY KEY (tenant_id, token_hash);
ALTER TABLE console_sessions ADD FOREIGN KEY (tenant_id, user_id)
    REFERENCES console_users (tenant_id, id) ON DELETE CASCADE;
DROP INDEX console_sessions_user;
CREATE INDEX console_sessions_user ON console_sessions (tenant_id, user_id);
CREATE INDEX console_sessions_token ON console_sessions (token_hash);

ALTER TABLE console_invitations ADD COLUMN tenant_id uuid;
UPDATE console_invitations i SET tenant_id = u.tenant_id FROM console_users u WHERE u.id = i.user_id;
ALTER TABLE console_invitations ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE console_invitations DROP CONSTRAINT console_invitations_pkey;
ALTER TABLE console_invitations ADD PRIMARY KEY (tenant_id, token_hash);
ALTER TABLE console_invitations ADD FOREIGN KEY (tenant_id, user_id)
    REFERENCES console_users (tenant_id, id) ON DELETE CASCADE;
DROP INDEX console_invitations_user;
CREATE INDEX console_invitations_user ON console_invitations (tenant_id, user_id);
CREATE INDEX console_invitations_token ON console_invitations (token_hash);
CREATE INDEX console_invitations_expiry ON console_invitations (expires_at);

ALTER TABLE console_login_challenges ADD COLUMN tenant_id uuid;
UPDATE console_login_challenges c SET tenant_id = u.tenant_id FROM console_users u WHERE u.id = c.user_id;
ALTER TABLE console_login_challenges ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE console_login_challenges DROP CONSTRAINT console_login_challenges_pkey;
ALTER TABLE console_login_challenges ADD PRIMARY KEY (tenant_id, token_hash);
ALTER TABLE console_login_challenges ADD FOREIGN KEY (tenant_id, user_id)
    REFERENCES console_users (tenant_id, id) ON DELETE CASCADE;
DROP INDEX console_login_challenges_user;
CREATE INDEX console_login_challenges_user ON console_login_challenges (tenant_id, user_id);
CREATE INDEX console_login_challenges_token ON console_login_challenges (token_hash);
