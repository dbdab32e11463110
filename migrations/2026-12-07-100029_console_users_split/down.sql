-- Back to one `console_users` (admins with tenant_id NULL) and children
-- keyed by token hash alone, with every row.

ALTER TABLE console_login_challenges DROP CONSTRAINT console_login_challenges_tenant_id_user_id_fkey;
DROP INDEX console_login_challenges_token;
DROP INDEX console_login_challenges_user;
ALTER TABLE console_login_challenges DROP CONSTRAINT console_login_challenges_pkey;
ALTER TABLE console_login_challenges ADD PRIMARY KEY (token_hash);
ALTER TABLE console_login_challenges DROP COLUMN tenant_id;
CREATE INDEX console_login_challenges_user ON console_login_challenges (user_id);

ALTER TABLE console_invitations DROP CONSTRAINT console_invitations_tenant_id_user_id_fkey;
DROP INDEX console_invitations_expiry;
DROP INDEX console_invitations_token;
DROP INDEX console_invitations_user;
ALTER TABLE console_invitations DROP CONSTRAINT console_invitations_pkey;
ALTER TABLE console_invitations ADD PRIMARY KEY (token_hash);
ALTER TABLE console_invitations DROP COLUMN tenant_id;
CREATE INDEX console_invitations_user ON console_invitations (user_id);

ALTER TABLE console_sessions DROP CONSTRAINT console_sessions_tenant_id_user_id_fkey;
DROP INDEX console_sessions_token;
DROP INDEX console_sessions_user;
ALTER TABLE console_sessions DROP CONSTRAINT console_sessions_pkey;
ALTER TABLE console_sessions ADD PRIMARY KEY (token_hash);
ALTER TABLE console_sessions DROP COLUMN tenant_id;
CREATE INDEX console_sessions_user ON console_sessions (user_id);

ALTER TABLE console_users DROP CONSTRAINT console_users_tenant_email;
ALTER TABLE console_users DROP CONSTRAINT console_users_pkey;
ALTER TABLE console_users ADD PRIMARY KEY (id);
ALTER TABLE console_users ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE console_users DROP CONSTRAINT console_users_tenant_role;
INSERT INTO console_users
    (id, tenant_id, email, role, password_hash, created_at, totp_secret_enc, totp_enabled, totp_last_step)
SELECT id, NULL, email, role, password_hash, created_at, totp_secret_enc, totp_enabled, totp_last_step
FROM platform_console_users;
ALTER TABLE console_users ADD CONSTRAINT console_users_check
    CHECK ((role = 'admin') = (tenant_id IS NULL));
CREATE UNIQUE INDEX console_users_email ON console_users (email);

INSERT INTO console_sessions (token_hash, user_id, csrf_token, created_at, expires_at)
SELECT token_hash, user_id, csrf_token, created_at, expires_at FROM platform_console_sessions;
INSERT INTO console_invitations (token_hash, user_id, created_at, expires_at, used_at)
SELECT token_hash, user_id, created_at, expires_at, used_at FROM platform_console_invitations;
INSERT INTO console_login_challenges (token_hash, user_id, failures, created_at, expires_at)
SELECT token_hash, user_id, failures, created_at, expires_at FROM platform_console_login_challenges;
ALTER TABLE console_sessions ADD CONSTRAINT console_sessions_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES console_users (id) ON DELETE CASCADE;
ALTER TABLE console_invitations ADD CONSTRAINT console_invitations_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES console_users (id) ON DELETE CASCADE;
ALTER TABLE console_login_challenges ADD CONSTRAINT console_login_challenges_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES console_users (id) ON DELETE CASCADE;

DROP TABLE platform_console_login_challenges;
DROP TABLE platform_console_invitations;
DROP TABLE platform_console_sessions;
DROP TABLE console_user_directory;
DROP TABLE platform_console_users;
