//! OAuth access tokens in use (issue 15): tenant and platform tokens through
//! the same `Principal` as keys, hostile tokens refused with the one 401, a
//! revoked client's tokens stopping within `auth.cache_ttl_secs` on another
//! node, key rotation with overlap, and independent checks: PyJWT verifies
//! issued tokens against the JWKS, requests-oauthlib runs the flow.

use crate::common;
use crate::oauth::{client, token, token_request};

use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{Resp, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const BAD_KEY: &str = "pl_live_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn mail(to: &str) -> Value {
    json!({"from": "a@a.example", "to": to, "subject": "s", "text": "t"})
}

/// The server's current signing key `(kid, PKCS#8)`, opened like the server does.
fn signing_key(app: &TestApp) -> (String, Vec<u8>) {
    use diesel::prelude::*;
    use postline::db::schema::oauth_signing_keys::dsl;
    let (id, kid, sealed): (uuid::Uuid, String, Vec<u8>) = dsl::oauth_signing_keys
        .filter(dsl::retires_at.is_null())
        .select((dsl::id, dsl::kid, dsl::private_key_enc))
        .first(&mut app.sql_conn())
        .expect("a signing key exists once a token was issued");
    let der = app
        .state
        .vault
        .open(&sealed, &postline::oauth::signing::private_key_context(id))
        .unwrap();
    (kid, der.to_vec())
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

fn sign(kid: &str, typ: &str, claims: &Value, der: &[u8]) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.into());
    h.typ = Some(typ.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_der(der)).unwrap()
}

fn python(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oauth/interop.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "PyJWT/requests-oauthlib missing: run the suite with deploy/dev test (installs tests/oauth/requirements.txt): {stderr}"
    );
    out
}

#[tokio::test]
async fn a_tenant_token_sends_and_reads_its_own_mail_only() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let (ta, tb) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (_, cid, secret) = client(
        &app,
        &format!("/v1/tenants/{ta}/oauth-clients"),
        &["send", "emails:read"],
    )
    .await;
    let tok = token(&app, &cid, &secret, None).await;
    let key_b = app.tenant_key(tb, &["send"]).await;
    let theirs = app.post("/v1/emails", &key_b, mail("b@example.com")).await;
    assert_eq!(theirs.status, 202, "{}", theirs.text);

    let r = app.post("/v1/emails", &tok, mail("a@example.com")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let mine = r.json["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/emails/{mine}"), &tok).await.status,
        200
    );
    let other = theirs.json["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/emails/{other}"), &tok).await.status,
        404
    );
    let list = app.get("/v1/emails", &tok).await;
    assert_eq!(
        list.json["data"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );
    // Acts as a tenant key: no admin routes, no acting for another tenant.
    assert_eq!(app.get("/v1/tenants", &tok).await.status, 403);
    let r = app
        .post(
            &format!("/v1/tenants/{tb}/emails"),
            &tok,
            mail("x@example.com"),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // A narrowed token holds only its scope.
    let send_only = token(&app, &cid, &secret, Some("send")).await;
    let r = app.get("/v1/emails", &send_only).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json["code"], "insufficient_permission");
}

#[tokio::test]
async fn a_platform_token_sends_for_two_tenants_and_lists_each() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let (ta, tb) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (_, cid, secret) = client(&app, "/v1/oauth-clients", &["send", "emails:read"]).await;
    let tok = token(&app, &cid, &secret, None).await;
    assert!(claims_of(&tok).get("tenant_id").is_none());
    for (t, to) in [
        (ta, "1@example.com"),
        (tb, "2@example.com"),
        (tb, "3@example.com"),
    ] {
        let mut body = mail(to);
        body["tenant_id"] = json!(t);
        let r = app.post("/v1/emails", &tok, body).await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    let r = app.get(&format!("/v1/emails?tenant_id={ta}"), &tok).await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 1, "{}", r.text);
    let r = app.get(&format!("/v1/emails?tenant_id={tb}"), &tok).await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 2, "{}", r.text);
    // Admin key limited to its permissions.
    let r = app.post("/v1/tenants", &tok, json!({"name": "C"})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json["code"], "insufficient_permission");
}

#[tokio::test]
async fn expired_foreign_none_and_tampered_tokens_get_the_one_401() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let ta = a["id"].as_str().unwrap();
    let (_, cid, secret) = client(
        &app,
        &format!("/v1/tenants/{ta}/oauth-clients"),
        &["send", "emails:read"],
    )
    .await;
    let real = token(&app, &cid, &secret, None).await;
    let (kid, der) = signing_key(&app);
    let claims = claims_of(&real);
    let now = chrono::Utc::now().timestamp();
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // Sanity: the crafting signs tokens the server accepts.
    let resigned = sign(&kid, "at+jwt", &with(json!({"jti": "x"})), &der);
    assert_eq!(app.get("/v1/emails", &resigned).await.status, 200);

    let other_key =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let (head, rest) = real.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let none_header = B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string());
    let tampered = B64.encode(with(json!({"tenant_id": b["id"]})).to_string());
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    hs.typ = Some("at+jwt".into());
    let public = ring::signature::KeyPair::public_key(
        &ring::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap(),
    )
    .as_ref()
    .to_vec();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(
                &kid,
                "at+jwt",
                &with(json!({"exp": now - 120, "iat": now - 1000, "nbf": now - 1000})),
                &der,
            ),
        ),
        (
            "not yet valid",
            sign(&kid, "at+jwt", &with(json!({"nbf": now + 600})), &der),
        ),
        (
            "wrong issuer",
            sign(&kid, "at+jwt", &with(json!({"iss": "evil"})), &der),
        ),
        (
            "wrong audience",
            sign(&kid, "at+jwt", &with(json!({"aud": "elsewhere"})), &der),
        ),
        (
            "no exp",
            sign(
                &kid,
                "at+jwt",
                &{
                    let mut c = claims.clone();
                    c.as_object_mut().unwrap().remove("exp");
                    c
                },
                &der,
            ),
        ),
        ("not an access token", sign(&kid, "JWT", &claims, &der)),
        (
            "another key, same kid",
            sign(&kid, "at+jwt", &claims, other_key.as_ref()),
        ),
        (
            "unknown kid",
            sign("no-such-kid", "at+jwt", &claims, other_key.as_ref()),
        ),
        (
            "alg none",
            format!("{none_header}.{}.", real.split('.').nth(1).unwrap()),
        ),
        (
            "alg none, signature kept",
            format!("{none_header}.{}.{sig}", real.split('.').nth(1).unwrap()),
        ),
        ("modified tenant_id", format!("{head}.{tampered}.{sig}")),
        (
            "HS256 keyed with the public key",
            jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&public)).unwrap(),
        ),
        ("garbage", "a.b.c".into()),
        ("too long", format!("{real}{}", "A".repeat(5000))),
    ];
    let reference = app.get("/v1/emails", BAD_KEY).await;
    assert_eq!(reference.status, 401);
    for (what, bad) in cases {
        let r: Resp = app.get("/v1/emails", &bad).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert_eq!(r.json, reference.json, "{what}: the same body as a bad key");
        assert_eq!(
            r.header("www-authenticate"),
            reference.header("www-authenticate"),
            "{what}"
        );
    }
    assert_eq!(
        app.get("/v1/emails", &real).await.status,
        200,
        "the real token still works"
    );
}

#[tokio::test]
async fn a_revoked_clients_tokens_stop_within_the_cache_ttl_on_another_node() {
    let ttl = 2;
    let a = TestApp::spawn_with(|s| s.auth.cache_ttl_secs = ttl).await;
    let mut settings = common::test_settings(&a.db_url);
    settings.auth.cache_ttl_secs = ttl;
    let b = TestApp::spawn_on(settings).await;
    let (id, cid, secret) = client(&a, "/v1/oauth-clients", &["tenants:read"]).await;
    let tok = token(&a, &cid, &secret, None).await;
    assert_eq!(a.get("/v1/tenants", &tok).await.status, 200);
    assert_eq!(
        b.get("/v1/tenants", &tok).await.status,
        200,
        "node B has it cached"
    );

    assert_eq!(
        a.delete(&format!("/v1/oauth-clients/{id}"), &a.admin_key)
            .await
            .status,
        204
    );
    let revoked = Instant::now();
    assert_eq!(
        a.get("/v1/tenants", &tok).await.status,
        401,
        "this node: at once"
    );
    loop {
        if b.get("/v1/tenants", &tok).await.status == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(ttl + 3),
            "node B still accepts the token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = token_request(&a, Some((&cid, &secret)), "grant_type=client_credentials").await;
    assert_eq!(r.status, 401, "no new tokens: {}", r.text);
}

#[tokio::test]
async fn jwks_verifies_issued_tokens_with_pyjwt() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "A"})).await;
    let ta = t["id"].as_str().unwrap();
    let (_, cid, secret) =
        client(&app, &format!("/v1/tenants/{ta}/oauth-clients"), &["send"]).await;
    let tok = token(&app, &cid, &secret, None).await;
    let (iss, aud) = (
        &app.state.settings.oauth.issuer,
        &app.state.settings.oauth.audience,
    );
    let out = python(&["verify", &app.address, &tok, iss, aud]);
    assert!(
        out.status.success(),
        "PyJWT refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let claims = &got["claims"];
    assert_eq!(claims["tenant_id"], ta);
    assert_eq!(
        (&claims["client_id"], &claims["sub"]),
        (&json!(cid), &json!(cid))
    );
    assert_eq!(claims["scope"], "send");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );

    let (pcid, psecret) = {
        let c = client(&app, "/v1/oauth-clients", &["tenants:read"]).await;
        (c.1, c.2)
    };
    let ptok = token(&app, &pcid, &psecret, None).await;
    let out = python(&["verify", &app.address, &ptok, iss, aud]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(got["claims"].get("tenant_id").is_none());
    // PyJWT must refuse a tampered token (the check can fail).
    let mut parts: Vec<String> = tok.split('.').map(str::to_string).collect();
    let mut c = claims_of(&tok);
    c["scope"] = json!("send emails:read");
    parts[1] = B64.encode(c.to_string());
    let out = python(&["verify", &app.address, &parts.join("."), iss, aud]);
    assert!(!out.status.success(), "PyJWT accepted a tampered token");
    let out = python(&["verify", &app.address, &tok, iss, "another-audience"]);
    assert!(!out.status.success(), "PyJWT accepted the wrong audience");
}

#[tokio::test]
async fn a_generic_oauth_client_library_gets_and_uses_a_token() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "A"})).await;
    let path = format!("/v1/tenants/{}/oauth-clients", t["id"].as_str().unwrap());
    let (_, cid, secret) = client(&app, &path, &["emails:read"]).await;
    let out = python(&["client", &app.address, &cid, &secret]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["token_type"], "Bearer");
    assert_eq!(got["status"], 200, "{got}");
    let out = python(&["client", &app.address, &cid, "wrong-secret"]);
    assert!(!out.status.success(), "a wrong secret must fail the flow");
}

#[tokio::test]
async fn rotate_key_cli_overlaps_then_retires_the_old_key() {
    let app = TestApp::spawn_with(|s| s.auth.cache_ttl_secs = 1).await;
    let (_, cid, secret) = client(&app, "/v1/oauth-clients", &["tenants:read"]).await;
    let old = token(&app, &cid, &secret, None).await;
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    let mut cli = Command::new(env!("CARGO_BIN_EXE_postline"));
    for (k, _) in std::env::vars() {
        if k.starts_with("POSTLINE") || k == "DATABASE_URL" {
            cli.env_remove(k);
        }
    }
    let out = cli
        .args(["oauth", "rotate-key", "--retire-after-secs", "3"])
        .env("DATABASE_URL", &app.db_url)
        .env(
            "POSTLINE__SECURITY__MASTER_KEY",
            app.state.settings.security.master_key.expose(),
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = Instant::now();
    app.state.oauth.reload_keys().await.unwrap();

    let new = token(&app, &cid, &secret, None).await;
    let new_kid = jsonwebtoken::decode_header(&new).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks = app
        .request("GET", "/.well-known/jwks.json", None, None)
        .await;
    let kids: Vec<&str> = jwks.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    assert_eq!(
        app.get("/v1/tenants", &old).await.status,
        200,
        "overlap: the old key still verifies"
    );
    assert_eq!(app.get("/v1/tenants", &new).await.status, 200);

    // Retired after 3 s (+ the 1 s cache): the old token stops, the new one works.
    tokio::time::sleep(
        Duration::from_secs(4).saturating_sub(rotated.elapsed()) + Duration::from_millis(1200),
    )
    .await;
    assert_eq!(
        app.get("/v1/tenants", &old).await.status,
        401,
        "the retired key verifies nothing"
    );
    assert_eq!(app.get("/v1/tenants", &new).await.status, 200);
    app.state.oauth.reload_keys().await.unwrap();
    let jwks = app
        .request("GET", "/.well-known/jwks.json", None, None)
        .await;
    let kids: Vec<&str> = jwks.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![new_kid.as_str()]);
}

#[tokio::test]
async fn secrets_rotate_reseals_the_signing_keys() {
    let app = TestApp::spawn().await;
    let (_, cid, secret) = client(&app, "/v1/oauth-clients", &["tenants:read"]).await;
    let before = token(&app, &cid, &secret, None).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut settings = common::test_settings(&app.db_url);
    settings.security.previous_master_keys = app.state.settings.security.master_key.clone();
    settings.security.master_key = postline::config::Secret::new(b64.encode([9u8; 32]));
    let vault = settings.vault().unwrap();
    let report = postline::secrets::rotate(&mut app.sql_conn(), &vault).unwrap();
    let (_, r) = report
        .iter()
        .find(|(n, _)| *n == "oauth_signing_keys.private_key")
        .unwrap();
    assert_eq!(r.rotated, 1);
    // A node with only the new master key signs and verifies with the resealed key.
    settings.security.previous_master_keys = postline::config::Secret::new("");
    let node = TestApp::spawn_on(settings).await;
    let after = token(&node, &cid, &secret, None).await;
    assert_eq!(node.get("/v1/tenants", &before).await.status, 200);
    assert_eq!(node.get("/v1/tenants", &after).await.status, 200);
}
