//! The `emails` rows of an ingest commit in one statement of one fixed text
//! (issue 24): every column an array, the rows unnested in SQL, so the
//! statement is prepared once per connection (`db::prepared`) whatever the
//! number of messages; diesel's multi-row `INSERT … VALUES` had one text
//! per row count and was parsed and planned at every commit.
//!
//! The four address lists of a row are `text[]`, which an array of arrays
//! cannot carry (Postgres arrays are rectangular): all lists of all rows
//! go in one flat `text[]`, each row gives where its lists end, and the
//! statement slices them out (`a[lo:hi]` with `lo > hi` is `{}`).

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, Bool, Bytea, Int2, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::{PgConnection, QueryResult, RunQueryDsl};
use uuid::Uuid;

use super::model::NewEmail;
use crate::db::prepared::{self, Prepared};

const INSERT: &str = "INSERT INTO emails (tenant_id, id, expires_at, message_id, from_addr, \
     envelope_from, to_addrs, cc_addrs, bcc_addrs, reply_to, subject, text_body, html_body, \
     headers, attachments, tags, created_at, raw_message, status, scheduled_at, stream, \
     unsubscribe, track) \
     SELECT t, i, x, m, f, ef, fa[o + 1 : e1], fa[e1 + 1 : e2], fa[e2 + 1 : e3], \
     fa[e3 + 1 : e4], s, tb, hb, h, a, tg, c, r, st, sa, sm, un, tr \
     FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22, $23, $24) \
     AS u(t, i, x, m, f, ef, s, tb, hb, h, a, tg, c, r, st, sa, sm, un, tr, o, e1, e2, e3, e4) \
     CROSS JOIN (SELECT $25::text[] AS fa) AS z";

/// Inserts `rows` (the caller holds the transaction and keeps a chunk's
/// size bounded).
pub fn rows(conn: &mut PgConnection, rows: &[&NewEmail]) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    statement(rows)?.execute(conn)
}

/// The statement for `rows`: the same text for any number of them.
fn statement<'a>(rows: &'a [&NewEmail]) -> QueryResult<Prepared<'a>> {
    let col = |f: fn(&NewEmail) -> Uuid| rows.iter().map(|r| f(r)).collect::<Vec<Uuid>>();
    let text =
        |f: for<'r> fn(&'r NewEmail) -> &'r str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let opt = |f: for<'r> fn(&'r NewEmail) -> Option<&'r str>| {
        rows.iter().map(|r| f(r)).collect::<Vec<Option<&str>>>()
    };
    let json = |f: for<'r> fn(&'r NewEmail) -> &'r serde_json::Value| {
        rows.iter()
            .map(|r| f(r))
            .collect::<Vec<&serde_json::Value>>()
    };
    let time = |f: fn(&NewEmail) -> DateTime<Utc>| {
        rows.iter().map(|r| f(r)).collect::<Vec<DateTime<Utc>>>()
    };
    // The address lists, flattened; per row: where its lists start (`o`)
    // and where each ends (`e1` to `e4`), 1-based and inclusive.
    let mut flat: Vec<&str> = Vec::new();
    let mut ends: [Vec<i32>; 5] = Default::default();
    for r in rows {
        ends[0].push(len(&flat)?);
        for (k, list) in [&r.to_addrs, &r.cc_addrs, &r.bcc_addrs, &r.reply_to]
            .into_iter()
            .enumerate()
        {
            flat.extend(list.iter().map(String::as_str));
            ends[k + 1].push(len(&flat)?);
        }
    }
    let [o, e1, e2, e3, e4] = ends;
    Ok(prepared::query(INSERT)
        .bind::<Array<SqlUuid>, _>(col(|r| r.tenant_id))
        .bind::<Array<SqlUuid>, _>(col(|r| r.id))
        .bind::<Array<Timestamptz>, _>(time(|r| r.expires_at))
        .bind::<Array<Text>, _>(text(|r| r.message_id.as_str()))
        .bind::<Array<Text>, _>(text(|r| r.from_addr.as_str()))
        .bind::<Array<Text>, _>(text(|r| r.envelope_from.as_str()))
        .bind::<Array<Text>, _>(text(|r| r.subject.as_str()))
        .bind::<Array<Nullable<Text>>, _>(opt(|r| r.text_body.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(opt(|r| r.html_body.as_deref()))
        .bind::<Array<Jsonb>, _>(json(|r| &r.headers))
        .bind::<Array<Jsonb>, _>(json(|r| &r.attachments))
        .bind::<Array<Jsonb>, _>(json(|r| &r.tags))
        .bind::<Array<Timestamptz>, _>(time(|r| r.created_at))
        .bind::<Array<Nullable<Bytea>>, _>(
            rows.iter()
                .map(|r| r.raw_message.as_deref())
                .collect::<Vec<Option<&[u8]>>>(),
        )
        .bind::<Array<Text>, _>(text(|r| r.status.as_str()))
        .bind::<Array<Nullable<Timestamptz>>, _>(
            rows.iter()
                .map(|r| r.scheduled_at)
                .collect::<Vec<Option<DateTime<Utc>>>>(),
        )
        .bind::<Array<Text>, _>(text(|r| r.stream.as_str()))
        .bind::<Array<Bool>, _>(rows.iter().map(|r| r.unsubscribe).collect::<Vec<bool>>())
        .bind::<Array<Int2>, _>(rows.iter().map(|r| r.track).collect::<Vec<i16>>())
        .bind::<Array<Int4>, _>(o)
        .bind::<Array<Int4>, _>(e1)
        .bind::<Array<Int4>, _>(e2)
        .bind::<Array<Int4>, _>(e3)
        .bind::<Array<Int4>, _>(e4)
        .bind::<Array<Text>, _>(flat))
}

/// A position in the flat address list as an `int4`.
fn len(flat: &[&str]) -> QueryResult<i32> {
    i32::try_from(flat.len()).map_err(|_| {
        diesel::result::Error::QueryBuilderError("too many addresses in one statement".into())
    })
}

#[cfg(test)]
mod tests {
    use diesel::pg::{Pg, PgQueryBuilder};
    use diesel::query_builder::{QueryBuilder, QueryFragment};

    use super::*;

    fn email(to: &[&str]) -> NewEmail {
        let now = Utc::now();
        NewEmail {
            tenant_id: Uuid::new_v4(),
            id: Uuid::new_v4(),
            expires_at: now,
            message_id: "<m@x>".into(),
            from_addr: "a@x.example".into(),
            envelope_from: "a@x.example".into(),
            to_addrs: to.iter().map(|s| s.to_string()).collect(),
            cc_addrs: vec![],
            bcc_addrs: vec![],
            reply_to: vec![],
            subject: "s".into(),
            text_body: Some("t".into()),
            html_body: None,
            headers: serde_json::json!({}),
            attachments: serde_json::json!([]),
            tags: serde_json::json!({}),
            created_at: now,
            raw_message: None,
            status: "queued".into(),
            scheduled_at: None,
            stream: "transactional".into(),
            unsubscribe: false,
            track: 0,
        }
    }

    fn sql(rows: &[&NewEmail]) -> (String, bool) {
        let q = statement(rows).unwrap();
        let mut b = PgQueryBuilder::default();
        q.to_sql(&mut b, &Pg).unwrap();
        (b.finish(), q.is_safe_to_cache_prepared(&Pg).unwrap())
    }

    /// What makes the statement cache apply: one text whatever the number
    /// of rows and addresses, and nothing that marks it uncacheable.
    #[test]
    fn one_text_for_any_number_of_rows() {
        let (a, b, c) = (
            email(&["a@y.example"]),
            email(&[]),
            email(&["b@y.example"; 7]),
        );
        let (one, cached) = sql(&[&a]);
        assert!(cached);
        assert_eq!(sql(&[&a, &b, &c]), (one.clone(), true));
        assert_eq!(one.matches('$').count(), 25, "{one}");
        assert!(
            one.ends_with("CROSS JOIN (SELECT $25::text[] AS fa) AS z"),
            "{one}"
        );
    }
}
