-- Issue 17 (rest): TOTP (RFC 6238) as a second factor for console users.

-- The TOTP secret, sealed with security.master_key (context
-- "console_user:<id>:totp_secret"); set at enrolment, in force once
-- totp_enabled. totp_last_step is the last time step accepted: a code of that
-- step or an earlier one is refused (no reuse).
ALTER TABLE console_users
    ADD COLUMN totp_secret_enc bytea,
    ADD COLUMN totp_enabled    boolean NOT NULL DEFAULT false,
    ADD COLUMN totp_last_step  bigint,
    ADD CONSTRAINT console_users_totp_enabled_has_secret
        CHECK (NOT totp_enabled OR totp_secret_enc IS NOT NULL);

-- A sign-in whose password was right and whose code is still due: the
-- browser holds a random token in a cookie, only its SHA-256 is stored.
-- failures: wrong codes entered for it; at 5 it is deleted (password again).
CREATE TABLE console_login_challenges (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    failures    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_login_challenges_user ON console_login_challenges (user_id);
CREATE INDEX console_login_challenges_expiry ON console_login_challenges (expires_at);
