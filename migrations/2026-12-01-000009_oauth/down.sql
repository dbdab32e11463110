DROP TABLE oauth_signing_keys;
DROP TABLE oauth_clients;
