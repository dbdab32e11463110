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
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        tenant_id -> Nullable<Uuid>,
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

diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(tenants, api_keys);
