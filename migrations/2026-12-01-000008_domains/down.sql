DROP TABLE domain_dkim_keys;
DROP TABLE domains;
