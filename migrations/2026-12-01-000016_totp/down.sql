DROP TABLE console_login_challenges;
ALTER TABLE console_users
    DROP CONSTRAINT console_users_totp_enabled_has_secret,
    DROP COLUMN totp_last_step,
    DROP COLUMN totp_enabled,
    DROP COLUMN totp_secret_enc;
