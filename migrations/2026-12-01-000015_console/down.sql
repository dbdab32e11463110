DROP TABLE console_invitations;
DROP TABLE console_sessions;
DROP TABLE console_users;
