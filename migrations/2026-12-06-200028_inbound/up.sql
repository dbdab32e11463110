-- Issue 28: receiving mail for tenants.
-- A route: where mail for an address (or every address of a domain) goes.
CREATE TABLE inbound_routes (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    -- As given, lower-cased: `support@acme.com` or `*@reply.acme.com`.
    match_addr  text NOT NULL,
    -- The domain part, and the local part (NULL for a wildcard).
    domain      text NOT NULL,
    local_part  text,
    action      text NOT NULL CHECK (action IN ('webhook', 'hold', 'reject')),
    webhook_id  uuid REFERENCES webhooks (id) ON DELETE SET NULL,
    format      text NOT NULL DEFAULT 'postline' CHECK (format IN ('postline', 'postmark')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, match_addr)
);
-- The listener's RCPT lookup (by domain, across tenants: the address decides the tenant).
CREATE INDEX inbound_routes_domain ON inbound_routes (domain, local_part);

-- A received message: one row per (message, route) it was accepted for.
CREATE TABLE inbound_messages (
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                   uuid NOT NULL,
    route_id             uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    mail_from            text NOT NULL,
    recipient            text NOT NULL,
    from_addr            text,
    to_addrs             text[] NOT NULL DEFAULT '{}',
    cc_addrs             text[] NOT NULL DEFAULT '{}',
    subject              text,
    message_id           text,
    in_reply_to_email_id uuid,
    mailbox_hash         text,
    -- text, html, stripped_text_reply, headers, attachments (metadata): NULL once purged.
    content              jsonb,
    raw                  bytea,
    size_bytes           integer NOT NULL,
    auth                 jsonb NOT NULL,
    spam                 jsonb,
    status               text NOT NULL
                         CHECK (status IN ('delivered', 'pending', 'failed', 'held', 'rejected')),
    content_purged_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX inbound_messages_listing ON inbound_messages (tenant_id, created_at DESC, id DESC);
CREATE INDEX inbound_messages_kept ON inbound_messages (created_at) WHERE content_purged_at IS NULL;

-- Replies linked: a tenant's sent message by its Message-ID.
CREATE INDEX emails_message_id ON emails (tenant_id, message_id);
