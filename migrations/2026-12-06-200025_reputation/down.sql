ALTER TABLE tenants DROP COLUMN reputation_policy;
DROP TABLE tenant_reputation;
DROP TABLE reputation_hourly;
