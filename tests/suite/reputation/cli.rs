//! `postline tenants reputation|reinstate` (issue 25): the real binary
//! against the test app's Postgres, on a tenant paused by a real DSN; the
//! reinstatement is the API's (held mail resumes, figures restart, gates
//! open within a second) with the audit's actor `cli`.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::json;

use crate::bounces::wait_for;
use crate::console::cli;

fn out(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_prints_a_tenants_reputation_and_reinstates_it() {
    let s = super::setup(|_| {}).await;
    let (id, key) = s.tenant("Cli", json!({"min_volume": 2})).await;
    let r = s
        .app
        .patch(
            &format!("/v1/tenants/{id}"),
            &s.app.admin_key,
            json!({"external_id": "cust-42"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.delivered(&key, "c0@example.org").await;
    s.delivered(&key, "c1@example.org").await;
    s.delivered(&key, "c2@example.org").await;
    s.hard_bounce("c0@example.org").await;
    // 1 of 3 bounced, 2 delivered ≥ min_volume: paused.
    s.wait_status(&key, "paused").await;

    let app = &s.app;
    let o = cli(app, &["tenants", "reputation", &id]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("status: paused"), "{stdout}");
    assert!(stdout.contains("reason: bounce rate 33.33%"), "{stdout}");
    assert!(
        stdout
            .contains("window 24 h: delivered 2, hard-bounced 1, complained 0, bounce rate 33.33%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("window 168 h: delivered 2, hard-bounced 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("domain acme.test: delivered 2, hard-bounced 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy: enforce window 24 h, min volume 2"),
        "{stdout}"
    );

    // Unknown tenants and overlong notes: exit 1, a clear message, no change.
    let o = cli(
        app,
        &["tenants", "reinstate", &uuid::Uuid::new_v4().to_string()],
    );
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    let long = "n".repeat(1001);
    let o = cli(app, &["tenants", "reinstate", &id, "--note", &long]);
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("at most 1000"), "{stderr}");
    assert_eq!(s.reputation(&key).await["status"], "paused");

    // By external id, with a note of exactly 1000 characters.
    let note = "m".repeat(1000);
    let o = cli(app, &["tenants", "reinstate", "cust-42", "--note", &note]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("tenant {id} reinstated")),
        "{stdout}"
    );
    assert!(stdout.contains("status: healthy"), "{stdout}");
    assert!(
        stdout.contains("window 24 h: delivered 0, hard-bounced 0"),
        "{stdout}"
    );
    assert_eq!(s.reputation(&key).await["status"], "healthy");

    // The API process's gate learns it from the database within a second.
    let started = Instant::now();
    let sent = loop {
        let r = s
            .app
            .post(
                "/v1/emails",
                &key,
                json!({"from": "noreply@acme.test", "to": "c3@example.org", "subject": "Hi", "text": "x"}),
            )
            .await;
        if r.status == 202 {
            break r.json["id"].as_str().unwrap().to_string();
        }
        assert_eq!(r.json["code"], "tenant_paused", "{}", r.text);
        assert!(started.elapsed() < Duration::from_secs(5), "still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_for(app, &key, &sent, |e| e["status"] == "delivered").await;

    // Audited as the CLI, with the note and the status it left.
    let rows: Vec<(String, serde_json::Value)> = {
        use postline::db::schema::audit_log::dsl::*;
        audit_log
            .filter(action.eq("tenant.reinstated"))
            .select((actor_kind, changes))
            .load(&mut app.sql_conn())
            .unwrap()
    };
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "cli");
    assert_eq!(rows[0].1["note"], note.as_str());
    assert_eq!(rows[0].1["status"]["from"], "paused");
}
