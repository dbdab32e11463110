DROP INDEX IF EXISTS emails_message_id;
DROP TABLE IF EXISTS inbound_messages;
DROP TABLE IF EXISTS inbound_routes;
