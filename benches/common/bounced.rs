//! Messages for the inbound benchmarks (`dsn`, `inbound_flood`): delivered
//! mail of one tenant that DSNs can name, and how many of them were
//! recorded bounced.

use diesel::prelude::*;
use uuid::Uuid;

use super::app::BenchApp;

/// `n` delivered single-recipient messages of one tenant, sent through the
/// API (worker off) and then marked delivered: (email id, recipient).
pub async fn delivered(app: &BenchApp, url: &str, n: usize) -> (Uuid, Vec<(Uuid, String)>) {
    let tenant = app.tenants(1).await.remove(0);
    let client = reqwest::Client::new();
    let mut sent = 0;
    while sent < n {
        let batch: Vec<_> = (sent..n.min(sent + 100))
            .map(|i| {
                serde_json::json!({
                    "from": format!("Shop <orders@{}>", tenant.domain),
                    "to": format!("customer{i}@example.com"),
                    "subject": format!("Your order #{i}"),
                    "text": "Thank you for your order.",
                })
            })
            .collect();
        sent += batch.len();
        let r = client
            .post(format!("http://{}/v1/emails/batch", app.addr))
            .bearer_auth(&tenant.key)
            .json(&serde_json::json!({ "emails": batch }))
            .send()
            .await
            .expect("batch send");
        assert!(r.status().is_success(), "batch send: {}", r.status());
    }
    let tenant_id = Uuid::parse_str(&tenant.id).expect("tenant id");
    let mut c = PgConnection::establish(url).expect("connect");
    for q in [
        "UPDATE emails SET status = 'delivered', delivered_at = now() WHERE tenant_id = $1",
        "UPDATE email_recipients SET status = 'delivered' WHERE tenant_id = $1",
        "DELETE FROM email_queue WHERE tenant_id = $1",
    ] {
        diesel::sql_query(q)
            .bind::<diesel::sql_types::Uuid, _>(tenant_id)
            .execute(&mut c)
            .expect("mark delivered");
    }
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        email_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        recipient: String,
    }
    let rows: Vec<Row> =
        diesel::sql_query("SELECT email_id, recipient FROM email_recipients WHERE tenant_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(tenant_id)
            .load(&mut c)
            .expect("recipients");
    assert_eq!(rows.len(), n, "every message has its recipient row");
    (
        tenant_id,
        rows.into_iter()
            .map(|r| (r.email_id, r.recipient))
            .collect(),
    )
}

/// Recipient rows of `tenant` recorded `bounced`.
pub fn recorded(url: &str, tenant: Uuid) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url).expect("connect");
    diesel::sql_query(
        "SELECT count(*) AS n FROM email_recipients WHERE tenant_id = $1 AND status = 'bounced'",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant)
    .get_result::<N>(&mut c)
    .expect("count")
    .n
}
