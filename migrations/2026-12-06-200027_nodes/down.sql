COMMENT ON TABLE oauth_signing_keys IS NULL;
DROP TABLE nodes;
