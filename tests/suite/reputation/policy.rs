//! `reputation_policy` on the tenant: validated field by field (422 naming
//! each bad key), shown in the tenant view, `null` back to the defaults; the
//! effective policy in the reputation object.

use serde_json::json;

use crate::common::TestApp;

#[tokio::test]
async fn a_tenant_policy_is_validated_shown_and_cleared() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "Policy"})).await;
    assert_eq!(t["reputation_policy"], serde_json::Value::Null, "{t}");
    let id = t["id"].as_str().unwrap();
    let path = format!("/v1/tenants/{id}");
    let admin = app.admin_key.clone();
    let bad = app
        .patch(
            &path,
            &admin,
            json!({"reputation_policy": {"mode": "loud", "window_hours": 169, "bounce_rate_pause": 0,
                   "complaint_rate_warning": 0.5, "complaint_rate_pause": 0.4, "check_secs": 1, "x": 1}}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    let fields: Vec<&str> = bad.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "mode",
        "window_hours",
        "bounce_rate_pause",
        "complaint_rate_warning",
        "check_secs",
        "x",
    ] {
        assert!(
            fields.contains(&format!("reputation_policy.{f}").as_str()),
            "{f}: {}",
            bad.text
        );
    }
    let r = app
        .patch(&path, &admin, json!({"reputation_policy": [1]}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // At the bounds.
    let ok = app
        .patch(
            &path,
            &admin,
            json!({"reputation_policy": {"mode": "monitor", "window_hours": 168, "min_volume": 0, "bounce_rate_pause": 1}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["reputation_policy"]["window_hours"], 168);
    let key = app.tenant_key(id, &["usage:read"]).await;
    let rep = app.get("/v1/reputation", &key).await;
    assert_eq!(rep.status, 200, "{}", rep.text);
    assert_eq!(rep.json["policy"]["mode"], "monitor");
    assert_eq!(
        rep.json["policy"]["bounce_rate_warning"], 0.04,
        "a default: {}",
        rep.text
    );
    assert_eq!(rep.json["windows"][0]["hours"], 168);
    assert_eq!(rep.json["status"], "healthy");
    let cleared = app
        .patch(&path, &admin, json!({"reputation_policy": null}))
        .await;
    assert_eq!(
        cleared.json["reputation_policy"],
        serde_json::Value::Null,
        "{}",
        cleared.text
    );
    let rep = app.get("/v1/reputation", &key).await;
    assert_eq!(rep.json["policy"]["mode"], "enforce");
    assert_eq!(rep.json["windows"][0]["hours"], 24);
    assert_eq!(rep.json["windows"][1]["hours"], 168);
    // A tenant key without usage:read, and the admin routes with a tenant key.
    let other = app.tenant_key(id, &["send"]).await;
    assert_eq!(app.get("/v1/reputation", &other).await.status, 403);
    assert_eq!(
        app.get(&format!("/v1/tenants/{id}/reputation"), &key)
            .await
            .status,
        403
    );
    // Unknown tenant: 404, for reads and the reinstatement.
    let none = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        app.get(&format!("/v1/tenants/{none}/reputation"), &admin)
            .await
            .status,
        404
    );
    assert_eq!(
        app.post(&format!("/v1/tenants/{none}/reinstate"), &admin, json!({}))
            .await
            .status,
        404
    );
    let long = app
        .post(
            &format!("/v1/tenants/{id}/reinstate"),
            &admin,
            json!({"note": "n".repeat(1001)}),
        )
        .await;
    assert_eq!(long.status, 422, "{}", long.text);
}
