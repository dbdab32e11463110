//! OAuth 2.0 client credentials (issue 15): clients and `POST /oauth/token`
//! over real HTTP against the real server and Postgres. Token use, refusals,
//! revocation, rotation and the independent checks are in `oauth_tokens`.

use crate::common;

use common::{Resp, TestApp};
use serde_json::{json, Value};

/// A client created on `path` (`/v1/oauth-clients` or a tenant's): `(id, client_id, secret)`.
pub async fn client(app: &TestApp, path: &str, permissions: &[&str]) -> (String, String, String) {
    let r = app
        .post(
            path,
            &app.admin_key,
            json!({"name": "c", "permissions": permissions}),
        )
        .await;
    assert_eq!(r.status, 201, "create client: {}", r.text);
    let s = |k: &str| r.json[k].as_str().unwrap().to_string();
    (s("id"), s("client_id"), s("client_secret"))
}

/// `POST /oauth/token` with HTTP Basic (when `basic`) and this form body.
pub async fn token_request(app: &TestApp, basic: Option<(&str, &str)>, form: &str) -> Resp {
    let mut req = app
        .client
        .post(format!("{}/oauth/token", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string());
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    TestApp::read(req.send().await.unwrap()).await
}

/// A token for this client (Basic auth), optionally narrowed.
pub async fn token(app: &TestApp, id: &str, secret: &str, scope: Option<&str>) -> String {
    let form = match scope {
        Some(s) => format!(
            "grant_type=client_credentials&scope={}",
            s.replace(' ', "+")
        ),
        None => "grant_type=client_credentials".into(),
    };
    let r = token_request(app, Some((id, secret)), &form).await;
    assert_eq!(r.status, 200, "token: {}", r.text);
    r.json["access_token"].as_str().unwrap().to_string()
}

fn assert_error(r: &Resp, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json["error"], error, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.json["error_description"].is_string());
}

#[tokio::test]
async fn token_issuance_by_basic_and_form_with_the_rfc_errors() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();
    let path = format!("/v1/tenants/{tid}/oauth-clients");
    let (_, cid, secret) = client(&app, &path, &["send", "emails:read"]).await;

    let r = token_request(&app, Some((&cid, &secret)), "grant_type=client_credentials").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 900);
    assert_eq!(r.json["scope"], "send emails:read");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        r.json["access_token"].as_str().unwrap().split('.').count(),
        3
    );

    let form = format!("grant_type=client_credentials&client_id={cid}&client_secret={secret}");
    let r = token_request(&app, None, &form).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Wrong secret: 401 invalid_client, naming Basic; by form too.
    let r = token_request(&app, Some((&cid, "wrong")), "grant_type=client_credentials").await;
    assert_error(&r, 401, "invalid_client");
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let bad = format!("grant_type=client_credentials&client_id={cid}&client_secret=wrong");
    assert_error(
        &token_request(&app, None, &bad).await,
        401,
        "invalid_client",
    );
    let unknown = "grant_type=client_credentials&client_id=plc_nobody&client_secret=x";
    assert_error(
        &token_request(&app, None, unknown).await,
        401,
        "invalid_client",
    );
    assert_error(
        &token_request(&app, None, "grant_type=client_credentials").await,
        401,
        "invalid_client",
    );

    // Grant type, scope, malformed requests.
    let r = token_request(&app, Some((&cid, &secret)), "grant_type=password").await;
    assert_error(&r, 400, "unsupported_grant_type");
    assert_error(
        &token_request(&app, Some((&cid, &secret)), "scope=send").await,
        400,
        "invalid_request",
    );
    for scope in ["tenants%3Awrite", "send+keys%3Awrite", "nonsense", ""] {
        let form = format!("grant_type=client_credentials&scope={scope}");
        let r = token_request(&app, Some((&cid, &secret)), &form).await;
        assert_error(&r, 400, "invalid_scope");
    }
    let r = token_request(
        &app,
        Some((&cid, &secret)),
        "grant_type=client_credentials&scope=send",
    )
    .await;
    assert_eq!(r.json["scope"], "send", "{}", r.text);
    let twice = "grant_type=client_credentials&grant_type=client_credentials";
    assert_error(
        &token_request(&app, Some((&cid, &secret)), twice).await,
        400,
        "invalid_request",
    );
    let both = format!("grant_type=client_credentials&client_id={cid}&client_secret={secret}");
    assert_error(
        &token_request(&app, Some((&cid, &secret)), &both).await,
        400,
        "invalid_request",
    );
    let r = app
        .client
        .post(format!("{}/oauth/token", app.address))
        .basic_auth(&cid, Some(&secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_error(&TestApp::read(r).await, 400, "invalid_request");

    // The body bound: 8192 bytes are read, one more is refused.
    let base = "grant_type=client_credentials&pad=";
    let at_bound = format!("{base}{}", "x".repeat(8192 - base.len()));
    assert_eq!(
        token_request(&app, Some((&cid, &secret)), &at_bound)
            .await
            .status,
        200
    );
    let over = format!("{at_bound}x");
    assert_error(
        &token_request(&app, Some((&cid, &secret)), &over).await,
        400,
        "invalid_request",
    );
    // A suspended tenant's client gets no token.
    let s = app.create_tenant(json!({"name": "S"})).await;
    let sid = s["id"].as_str().unwrap();
    let r = app
        .patch(
            &format!("/v1/tenants/{sid}"),
            &app.admin_key,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, scid, ssecret) =
        client(&app, &format!("/v1/tenants/{sid}/oauth-clients"), &["send"]).await;
    let r = token_request(
        &app,
        Some((&scid, &ssecret)),
        "grant_type=client_credentials",
    )
    .await;
    assert_error(&r, 400, "invalid_grant");

    let long_secret = "s".repeat(1000);
    let r = token_request(
        &app,
        Some((&cid, &long_secret)),
        "grant_type=client_credentials",
    )
    .await;
    assert_error(&r, 401, "invalid_client");
}

#[tokio::test]
async fn token_requests_are_limited_per_client() {
    let app = TestApp::spawn_with(|s| s.oauth.token_requests_per_minute = 3).await;
    let (_, a, sa) = client(&app, "/v1/oauth-clients", &["tenants:read"]).await;
    let (_, b, sb) = client(&app, "/v1/oauth-clients", &["tenants:read"]).await;
    for _ in 0..3 {
        token(&app, &a, &sa, None).await;
    }
    let r = token_request(&app, Some((&a, &sa)), "grant_type=client_credentials").await;
    assert_error(&r, 429, "slow_down");
    assert!(r.header("retry-after").is_some());
    // A wrong secret is refused as such: the limit is the client's own,
    // spent only once its secret is right (hostile::oauth_lockout).
    let r = token_request(&app, Some((&a, "wrong")), "grant_type=client_credentials").await;
    assert_error(&r, 401, "invalid_client");
    // Another client is not affected.
    token(&app, &b, &sb, None).await;
}

#[tokio::test]
async fn clients_are_created_listed_and_revoked_within_their_creators_rights() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let (ta, tb) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (id, cid, _) = client(&app, &format!("/v1/tenants/{ta}/oauth-clients"), &["send"]).await;

    let r = app
        .get(&format!("/v1/tenants/{ta}/oauth-clients"), &app.admin_key)
        .await;
    assert_eq!(r.status, 200);
    let listed = &r.json["data"][0];
    assert_eq!(listed["client_id"], cid.as_str());
    assert_eq!(listed["kind"], "tenant");
    assert_eq!(listed["tenant_id"], ta);
    assert!(listed.get("client_secret").is_none() && !r.text.contains("secret_hash"));
    let platform = app.get("/v1/oauth-clients", &app.admin_key).await;
    assert_eq!(platform.json["data"].as_array().unwrap().len(), 0);

    // A creator with fewer rights cannot grant more.
    let r = app
        .post(
            "/v1/admin-keys",
            &app.admin_key,
            json!({"name": "small", "permissions": ["keys:write", "tenants:read"]}),
        )
        .await;
    let small = r.json["key"].as_str().unwrap().to_string();
    let over = json!({"name": "c", "permissions": ["tenants:write"]});
    let r = app.post("/v1/oauth-clients", &small, over).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app
        .post(
            "/v1/oauth-clients",
            &small,
            json!({"name": "c", "permissions": ["tenants:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["kind"], "platform");
    assert!(r.json["tenant_id"].is_null());

    // Validation: admin-only permissions on a tenant client, kind, bounds.
    let tpath = format!("/v1/tenants/{ta}/oauth-clients");
    let bad: [Value; 5] = [
        json!({"name": "c", "permissions": ["tenants:write"]}),
        json!({"name": "c", "kind": "platform"}),
        json!({"name": "", "permissions": ["send"]}),
        json!({"name": "c", "permissions": []}),
        json!({"name": "c", "permissions": vec!["send"; 33]}),
    ];
    for body in bad {
        let r = app.post(&tpath, &app.admin_key, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
    }
    let r = app
        .post(
            &tpath,
            &app.admin_key,
            json!({"name": "c", "permissions": vec!["send"; 32]}),
        )
        .await;
    assert_eq!(
        r.status, 201,
        "32 permission names are accepted: {}",
        r.text
    );
    let tenant_key = app.tenant_key(ta, &["send"]).await;
    let r = app.post(&tpath, &tenant_key, json!({"name": "c"})).await;
    assert_eq!(r.status, 403, "tenant keys manage no clients: {}", r.text);

    // last_used_at is collected in memory and written in one batch.
    let (_, used_cid, used_secret) =
        client(&app, &format!("/v1/tenants/{tb}/oauth-clients"), &["send"]).await;
    token(&app, &used_cid, &used_secret, None).await;
    assert!(app.state.oauth.flush_last_used().await.unwrap() >= 1);
    let r = app
        .get(&format!("/v1/tenants/{tb}/oauth-clients"), &app.admin_key)
        .await;
    assert!(r.json["data"][0]["last_used_at"].is_string(), "{}", r.text);

    // Another tenant's path does not find it; the right path revokes it.
    let r = app
        .delete(
            &format!("/v1/tenants/{tb}/oauth-clients/{id}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .delete(&format!("/v1/oauth-clients/{id}"), &app.admin_key)
        .await;
    assert_eq!(r.status, 404, "a tenant client is not a platform client");
    let r = app
        .delete(
            &format!("/v1/tenants/{ta}/oauth-clients/not-a-uuid"),
            &app.admin_key,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .delete(
            &format!("/v1/tenants/{ta}/oauth-clients/{id}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .get(&format!("/v1/tenants/{ta}/oauth-clients"), &app.admin_key)
        .await;
    let revoked = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_string());
}
