// Diesel table definitions. Kept in step with `migrations/` by hand or with
// `diesel print-schema` (see diesel.toml).

diesel::table! {
    tenants (id) {
        id -> Uuid,
        external_id -> Nullable<Text>,
        name -> Text,
        domain -> Nullable<Text>,
        settings -> Jsonb,
        smtp_host -> Nullable<Text>,
        smtp_port -> Nullable<Int4>,
        smtp_username -> Nullable<Text>,
        smtp_password_enc -> Nullable<Bytea>,
        smtp_tls -> Nullable<Text>,
        requests_per_minute -> Nullable<Int4>,
        emails_per_day -> Nullable<Int4>,
        emails_per_second -> Nullable<Int4>,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        retention_content_days -> Nullable<Int4>,
        reputation_policy -> Nullable<Jsonb>,
        pools -> Jsonb,
    }
}

diesel::table! {
    api_keys (tenant_id, id) {
        id -> Uuid,
        tenant_id -> Uuid,
        kind -> Text,
        name -> Text,
        key_id -> Text,
        secret_hash -> Text,
        permissions -> Array<Text>,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

// Admin keys and the key-id directory (reference tables, issue 27).
diesel::table! {
    admin_keys (id) {
        id -> Uuid,
        kind -> Text,
        name -> Text,
        key_id -> Text,
        secret_hash -> Text,
        permissions -> Array<Text>,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    api_key_directory (key_id) {
        key_id -> Text,
        tenant_id -> Nullable<Uuid>,
    }
}

diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(tenants, api_keys);

diesel::table! {
    emails (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        status -> Text,
        attempts -> Int4,
        expires_at -> Timestamptz,
        last_error -> Nullable<Text>,
        smtp_response -> Nullable<Text>,
        message_id -> Text,
        from_addr -> Text,
        envelope_from -> Text,
        to_addrs -> Array<Text>,
        cc_addrs -> Array<Text>,
        bcc_addrs -> Array<Text>,
        reply_to -> Array<Text>,
        subject -> Text,
        text_body -> Nullable<Text>,
        html_body -> Nullable<Text>,
        headers -> Jsonb,
        attachments -> Jsonb,
        tags -> Jsonb,
        created_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
        content_purged_at -> Nullable<Timestamptz>,
        raw_message -> Nullable<Bytea>,
        scheduled_at -> Nullable<Timestamptz>,
        stream -> Text,
        unsubscribe -> Bool,
        track -> Int2,
    }
}

diesel::table! {
    email_queue (tenant_id, email_id) {
        tenant_id -> Uuid,
        email_id -> Uuid,
        next_attempt_at -> Timestamptz,
        lease_until -> Nullable<Timestamptz>,
        fence -> Int8,
        lost -> Int4,
        held -> Bool,
        size_bytes -> Int4,
        broadcast -> Bool,
    }
}

diesel::allow_tables_to_appear_in_same_query!(emails, email_queue);

diesel::table! {
    email_events (tenant_id, email_id, seq) {
        tenant_id -> Uuid,
        email_id -> Uuid,
        seq -> Int8,
        #[sql_name = "type"]
        kind -> Text,
        detail -> Jsonb,
        at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (tenant_id, key) {
        tenant_id -> Uuid,
        key -> Text,
        request_hash -> Bytea,
        status_code -> Int4,
        response -> Jsonb,
        created_at -> Timestamptz,
    }
}

// Admin batches across tenants (reference table).
diesel::table! {
    platform_idempotency_keys (admin_key_id, key) {
        admin_key_id -> Uuid,
        key -> Text,
        request_hash -> Bytea,
        status_code -> Int4,
        response -> Jsonb,
        created_at -> Timestamptz,
    }
}

// Who holds each verified domain name (reference table).
diesel::table! {
    verified_domains (name) {
        name -> Text,
        tenant_id -> Uuid,
        domain_id -> Uuid,
    }
}

diesel::joinable!(emails -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(emails, tenants);
diesel::allow_tables_to_appear_in_same_query!(emails, email_events);

// --- templates and webhooks (migration 000004) ---

diesel::table! {
    templates (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
        subject -> Text,
        html -> Nullable<Text>,
        text -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhooks (tenant_id, id) {
        id -> Uuid,
        tenant_id -> Uuid,
        url -> Text,
        events -> Array<Text>,
        description -> Nullable<Text>,
        secret_enc -> Bytea,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (tenant_id, id) {
        id -> Uuid,
        webhook_id -> Uuid,
        tenant_id -> Uuid,
        email_id -> Nullable<Uuid>,
        event_type -> Text,
        payload -> Jsonb,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_status_code -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_attempts (tenant_id, delivery_id, attempt) {
        delivery_id -> Uuid,
        attempt -> Int4,
        at -> Timestamptz,
        status_code -> Nullable<Int4>,
        error -> Nullable<Text>,
        duration_ms -> Int4,
        tenant_id -> Uuid,
    }
}

// The platform's endpoints and their outbox (reference tables, issue 27).
diesel::table! {
    platform_webhooks (id) {
        id -> Uuid,
        url -> Text,
        events -> Array<Text>,
        description -> Nullable<Text>,
        secret_enc -> Bytea,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    platform_webhook_deliveries (id) {
        id -> Uuid,
        webhook_id -> Uuid,
        tenant_id -> Nullable<Uuid>,
        email_id -> Nullable<Uuid>,
        event_type -> Text,
        payload -> Jsonb,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_status_code -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    platform_webhook_attempts (delivery_id, attempt) {
        delivery_id -> Uuid,
        attempt -> Int4,
        at -> Timestamptz,
        status_code -> Nullable<Int4>,
        error -> Nullable<Text>,
        duration_ms -> Int4,
    }
}

diesel::joinable!(templates -> tenants (tenant_id));
diesel::joinable!(platform_webhook_deliveries -> platform_webhooks (webhook_id));
diesel::allow_tables_to_appear_in_same_query!(templates, tenants);
diesel::allow_tables_to_appear_in_same_query!(webhooks, webhook_deliveries, webhook_attempts);
diesel::allow_tables_to_appear_in_same_query!(
    platform_webhooks,
    platform_webhook_deliveries,
    platform_webhook_attempts
);
diesel::table! {
    usage_daily (tenant_id, day, shard) {
        tenant_id -> Uuid,
        day -> Date,
        shard -> Int2,
        emails_sent -> Int8,
        emails_delivered -> Int8,
        emails_bounced -> Int8,
        emails_failed -> Int8,
        api_requests -> Int8,
        emails_complained -> Int8,
        emails_suppressed -> Int8,
        emails_unsubscribed -> Int8,
        emails_opened -> Int8,
        emails_clicked -> Int8,
    }
}
diesel::allow_tables_to_appear_in_same_query!(tenants, usage_daily);

diesel::table! {
    usage_stream_daily (tenant_id, day, stream, shard) {
        tenant_id -> Uuid,
        day -> Date,
        stream -> Text,
        shard -> Int2,
        emails_sent -> Int8,
        emails_delivered -> Int8,
        emails_bounced -> Int8,
        emails_failed -> Int8,
        emails_complained -> Int8,
        emails_unsubscribed -> Int8,
    }
}

diesel::table! {
    domains (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
        status -> Text,
        created_at -> Timestamptz,
        verified_at -> Nullable<Timestamptz>,
        last_checked_at -> Nullable<Timestamptz>,
        failing_since -> Nullable<Timestamptz>,
        next_check_at -> Timestamptz,
        checks -> Jsonb,
    }
}

diesel::table! {
    domain_dkim_keys (tenant_id, domain_id, id) {
        tenant_id -> Uuid,
        domain_id -> Uuid,
        id -> Uuid,
        selector -> Text,
        algorithm -> Text,
        status -> Text,
        private_key_enc -> Bytea,
        public_key -> Text,
        created_at -> Timestamptz,
        activated_at -> Nullable<Timestamptz>,
        retire_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(domains -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(domains, domain_dkim_keys, tenants);

// --- bounces and suppressions (migration 000010) ---

diesel::table! {
    email_recipients (tenant_id, email_id, recipient) {
        tenant_id -> Uuid,
        email_id -> Uuid,
        recipient -> Text,
        kind -> Text,
        status -> Text,
        smtp_response -> Nullable<Text>,
        bounce -> Nullable<Jsonb>,
        updated_at -> Timestamptz,
        first_opened_at -> Nullable<Timestamptz>,
        first_clicked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    suppressions (tenant_id, email) {
        tenant_id -> Uuid,
        email -> Text,
        reason -> Text,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        source_email_id -> Nullable<Uuid>,
        detail -> Nullable<Text>,
        stream -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(emails, email_recipients);

// The view of tenant_audit_log and platform_audit_log (issue 27): the
// listing reads it; entries are written to one of the two tables.
diesel::table! {
    audit_log (id) {
        id -> Uuid,
        tenant_id -> Nullable<Uuid>,
        at -> Timestamptz,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        action -> Text,
        target_id -> Nullable<Text>,
        request_id -> Nullable<Text>,
        changes -> Jsonb,
    }
}

diesel::table! {
    tenant_audit_log (tenant_id, id) {
        id -> Uuid,
        tenant_id -> Uuid,
        at -> Timestamptz,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        action -> Text,
        target_id -> Nullable<Text>,
        request_id -> Nullable<Text>,
        changes -> Jsonb,
    }
}

diesel::table! {
    platform_audit_log (id) {
        id -> Uuid,
        at -> Timestamptz,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        action -> Text,
        target_id -> Nullable<Text>,
        request_id -> Nullable<Text>,
        changes -> Jsonb,
    }
}

diesel::table! {
    oauth_clients (tenant_id, id) {
        id -> Uuid,
        tenant_id -> Uuid,
        kind -> Text,
        name -> Text,
        client_id -> Text,
        secret_hash -> Text,
        permissions -> Array<Text>,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

// Platform clients and the client-id directory (reference tables, issue 27).
diesel::table! {
    platform_oauth_clients (id) {
        id -> Uuid,
        kind -> Text,
        name -> Text,
        client_id -> Text,
        secret_hash -> Text,
        permissions -> Array<Text>,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_client_directory (client_id) {
        client_id -> Text,
        tenant_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    oauth_signing_keys (id) {
        id -> Uuid,
        kid -> Text,
        private_key_enc -> Bytea,
        public_key -> Bytea,
        created_at -> Timestamptz,
        retires_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(oauth_clients -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(oauth_clients, tenants);

// Console (issue 17, migration 000015; split by owner in 100029): a
// tenant's users and their sessions, invitations and sign-in challenges are
// keyed (tenant_id, …); the platform's admins and theirs are in the
// `platform_console_*` reference tables; `console_user_directory` maps an
// e-mail address to its owner. Joins name their columns (composite keys).
diesel::table! {
    console_users (tenant_id, id) {
        id -> Uuid,
        tenant_id -> Uuid,
        email -> Text,
        role -> Text,
        password_hash -> Nullable<Text>,
        created_at -> Timestamptz,
        // TOTP (migration 000016).
        totp_secret_enc -> Nullable<Bytea>,
        totp_enabled -> Bool,
        totp_last_step -> Nullable<Int8>,
    }
}

diesel::table! {
    console_sessions (tenant_id, token_hash) {
        tenant_id -> Uuid,
        token_hash -> Bytea,
        user_id -> Uuid,
        csrf_token -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    console_invitations (tenant_id, token_hash) {
        tenant_id -> Uuid,
        token_hash -> Bytea,
        user_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

// Console TOTP sign-in challenges (migration 000016).
diesel::table! {
    console_login_challenges (tenant_id, token_hash) {
        tenant_id -> Uuid,
        token_hash -> Bytea,
        user_id -> Uuid,
        failures -> Int4,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    platform_console_users (id) {
        id -> Uuid,
        email -> Text,
        role -> Text,
        password_hash -> Nullable<Text>,
        created_at -> Timestamptz,
        totp_secret_enc -> Nullable<Bytea>,
        totp_enabled -> Bool,
        totp_last_step -> Nullable<Int8>,
    }
}

diesel::table! {
    platform_console_sessions (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        csrf_token -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    platform_console_invitations (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    platform_console_login_challenges (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        failures -> Int4,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    console_user_directory (email) {
        email -> Text,
        tenant_id -> Nullable<Uuid>,
    }
}

diesel::joinable!(console_users -> tenants (tenant_id));
diesel::joinable!(platform_console_sessions -> platform_console_users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    console_sessions,
    console_users,
    console_invitations,
    console_login_challenges,
    tenants
);
diesel::allow_tables_to_appear_in_same_query!(platform_console_sessions, platform_console_users);

// Leased budgets (src/cluster/budget.rs).
diesel::table! {
    budgets (tenant_id, budget) {
        tenant_id -> Uuid,
        budget -> Text,
        closed_at_limit -> Nullable<Int8>,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    budget_leases (tenant_id, budget, holder) {
        tenant_id -> Uuid,
        budget -> Text,
        holder -> Uuid,
        lease -> Uuid,
        granted -> Int8,
        spent -> Int8,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    reputation_hourly (tenant_id, hour, domain) {
        tenant_id -> Uuid,
        hour -> Timestamptz,
        domain -> Text,
        delivered -> Int8,
        hard_bounced -> Int8,
        complained -> Int8,
    }
}

diesel::table! {
    tenant_reputation (tenant_id) {
        tenant_id -> Uuid,
        status -> Text,
        reason -> Nullable<Text>,
        paused_at -> Nullable<Timestamptz>,
        reinstated_at -> Nullable<Timestamptz>,
        changed_at -> Timestamptz,
    }
}

// The node registry (src/cluster/node.rs).
diesel::table! {
    nodes (id) {
        id -> Uuid,
        hostname -> Text,
        roles -> Array<Text>,
        version -> Text,
        started_at -> Timestamptz,
        heartbeat_at -> Timestamptz,
        stopped_at -> Nullable<Timestamptz>,
    }
}
// A site's slow-downs, shared by the nodes (src/delivery/mx/slowdowns.rs).
diesel::table! {
    mx_slowdowns (site) {
        site -> Text,
        seq -> Int8,
        slowed_at -> Timestamptz,
    }
}
// A site marked down, shared by the nodes (src/delivery/mx/downs.rs).
diesel::table! {
    mx_site_downs (site) {
        site -> Text,
        down_until -> Timestamptz,
        marked_at -> Timestamptz,
    }
}
// Inbound mail for tenants (src/inbound/).
diesel::table! {
    inbound_routes (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        match_addr -> Text,
        domain -> Text,
        local_part -> Nullable<Text>,
        action -> Text,
        webhook_id -> Nullable<Uuid>,
        format -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    inbound_messages (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        route_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        mail_from -> Text,
        recipient -> Text,
        from_addr -> Nullable<Text>,
        to_addrs -> Array<Text>,
        cc_addrs -> Array<Text>,
        subject -> Nullable<Text>,
        message_id -> Nullable<Text>,
        in_reply_to_email_id -> Nullable<Uuid>,
        mailbox_hash -> Nullable<Text>,
        content -> Nullable<Jsonb>,
        raw -> Nullable<Bytea>,
        size_bytes -> Int4,
        auth -> Jsonb,
        spam -> Nullable<Jsonb>,
        status -> Text,
        content_purged_at -> Nullable<Timestamptz>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(inbound_routes, tenants);
