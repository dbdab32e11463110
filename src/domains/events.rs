//! `domain.verified` / `domain.failed` webhooks: outbox rows written in the
//! transaction of the status change, like the message events of
//! `webhooks::outbox` (the dispatcher delivers them the same way; they carry
//! no `email_id`).

use diesel::prelude::*;
use diesel::sql_types::{Text, Uuid as SqlUuid};

use super::model::DomainRow;

pub fn enqueue(conn: &mut PgConnection, kind: &str, d: &DomainRow) -> QueryResult<usize> {
    diesel::sql_query(crate::webhooks::outbox::to_outboxes(
        "SELECT gen_random_uuid(), w.id, t.id, NULL, $2, \
           jsonb_build_object( \
             'type', $2::text, \
             'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             'data', jsonb_build_object( \
               'domain_id', $3::uuid, \
               'tenant_id', t.id, \
               'external_tenant_id', t.external_id, \
               'name', $4::text, \
               'status', $5::text)), \
           now(), now(), w.tenant_id IS NULL \
         FROM tenants t \
         JOIN webhook_subscribers w ON (w.tenant_id = t.id OR w.tenant_id IS NULL) AND w.enabled \
          AND ('*' = ANY (w.events) OR $2 = ANY (w.events)) \
         WHERE t.id = $1",
    ))
    .bind::<SqlUuid, _>(d.tenant_id)
    .bind::<Text, _>(kind)
    .bind::<SqlUuid, _>(d.id)
    .bind::<Text, _>(&d.name)
    .bind::<Text, _>(&d.status)
    .execute(conn)
}
