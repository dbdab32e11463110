//! The console's Inbound page (issue 28, routes "API and console"): a
//! developer creates and deletes routes through CSRF-checked forms (the
//! listener then accepts, then refuses, the address), a route at an
//! unverified domain is refused in the form with the service's code, a
//! viewer reads but cannot change, received mail and its attachment are
//! read through the session, another tenant's ids are the not-found page.

use diesel::prelude::*;
use postline::console::users::Role;

use crate::console::{csrf_of, get, post, sign_in, user};
use crate::inbound::{message, smtplib, tenant, world_with};

/// A tenant's id by its name (the inbound helpers name tenants by domain).
pub fn tenant_id(app: &crate::common::TestApp, named: &str) -> String {
    use postline::db::schema::tenants::dsl::*;
    let t: uuid::Uuid = tenants
        .filter(name.eq(named))
        .select(id)
        .first(&mut app.sql_conn())
        .unwrap();
    t.to_string()
}

#[tokio::test]
async fn routes_are_managed_in_the_console_and_received_mail_is_read_there() {
    let w = world_with(|_| {}).await;
    let t = tenant_id(&w.app, "acme.test");
    user(&w.app, "dev@acme.test", Role::Developer, Some(&t)).await;
    user(&w.app, "viewer@acme.test", Role::Viewer, Some(&t)).await;
    let (dev, _) = sign_in(&w.app, "dev@acme.test", &[]).await;
    let (viewer, _) = sign_in(&w.app, "viewer@acme.test", &[]).await;

    let (status, page, _) = get(&w.app, &dev, "/console/inbound").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("No routes yet"), "{page}");
    assert!(
        page.contains(&format!("value=\"{}\"", w.hook)),
        "endpoint select: {page}"
    );
    let csrf = csrf_of(&page);

    // Without the form token: 403, nothing created.
    let form = [
        ("match", "support@acme.test"),
        ("action", "webhook"),
        ("webhook_id", w.hook.as_str()),
        ("format", "postline"),
    ];
    let (status, _) = post(&w.app, &dev, "/console/inbound/routes", &form).await;
    assert_eq!(status, 403);
    let routes = w.app.get("/v1/inbound/routes", &w.key).await;
    assert_eq!(routes.json["data"].as_array().unwrap().len(), 0);

    // A domain this tenant has not verified: the form again, with the code.
    let (status, page) = post(
        &w.app,
        &dev,
        "/console/inbound/routes",
        &[
            ("csrf", csrf.as_str()),
            ("match", "x@elsewhere.test"),
            ("action", "hold"),
            ("format", "postline"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("id=\"route-error\""), "{page}");
    assert!(page.contains("domain_not_verified"), "{page}");
    assert!(
        page.contains("value=\"x@elsewhere.test\""),
        "typed value kept"
    );

    // With it: created, listed, and the listener now takes the address.
    let mut with = form.to_vec();
    with.push(("csrf", csrf.as_str()));
    let (status, body) = post(&w.app, &dev, "/console/inbound/routes", &with).await;
    assert_eq!(status, 303, "{body}");
    let routes = w.app.get("/v1/inbound/routes", &w.key).await;
    let route = routes.json["data"][0].clone();
    assert_eq!(route["match"], "support@acme.test");
    assert_eq!(route["webhook_id"], w.hook.as_str());
    let route_id = route["id"].as_str().unwrap().to_string();
    let (_, page, _) = get(&w.app, &dev, "/console/inbound").await;
    assert!(
        page.contains(&format!("id=\"delete-{route_id}\"")),
        "{page}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let msg = message(
        "alice@sender.test",
        "support@acme.test",
        "Help please",
        "My order is late.",
        "",
        &[("invoice.txt", "text/plain", b"INVOICE-42".to_vec())],
    );
    let out = smtplib(
        w.inbound.addr(),
        "alice@sender.test",
        &["support@acme.test"],
        &msg,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    let list = w.app.get("/v1/inbound", &w.key).await;
    let id = list.json["data"][0]["id"].as_str().unwrap().to_string();

    // The viewer reads the list, the message and its attachment…
    let (status, page, _) = get(&w.app, &viewer, "/console/inbound").await;
    assert_eq!(status, 200);
    assert!(page.contains("Help please") && page.contains("support@acme.test"));
    assert!(!page.contains("id=\"create-route\""), "no form for viewers");
    assert!(!page.contains(&format!("id=\"delete-{route_id}\"")));
    let (status, page, _) = get(&w.app, &viewer, &format!("/console/inbound/{id}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("My order is late."), "{page}");
    assert!(page.contains("invoice.txt"), "{page}");
    assert!(page.contains("id=\"auth-spf\""), "{page}");
    let (status, file, _) = get(
        &w.app,
        &viewer,
        &format!("/console/inbound/{id}/attachments/0"),
    )
    .await;
    assert_eq!((status, file.as_str()), (200, "INVOICE-42"));
    // Bad input is a clear 4xx page: an attachment that is not there, a
    // cursor that is not one.
    for path in [
        format!("/console/inbound/{id}/attachments/1"),
        format!("/console/inbound/{id}/attachments/x"),
        "/console/inbound/not-an-id".to_string(),
    ] {
        let (status, _, _) = get(&w.app, &viewer, &path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, page, _) = get(&w.app, &viewer, "/console/inbound?cursor=garbage").await;
    assert!((400..500).contains(&status), "{status}: {page}");

    // An admin picks the tenant, then acts for it with ?tenant=.
    user(&w.app, "admin@postline.test", Role::Admin, None).await;
    let (admin, _) = sign_in(&w.app, "admin@postline.test", &[]).await;
    let (status, page, _) = get(&w.app, &admin, "/console/inbound").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Choose a tenant") && page.contains(&format!("inbound?tenant={t}")),
        "{page}"
    );
    let (status, page, _) = get(&w.app, &admin, &format!("/console/inbound?tenant={t}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Help please") && page.contains(&format!("id=\"delete-{route_id}\"")));
    let (status, _, _) = get(
        &w.app,
        &admin,
        &format!("/console/inbound/{id}/attachments/0?tenant={t}"),
    )
    .await;
    assert_eq!(status, 200);

    // …but cannot change routes, even with a valid token.
    let vcsrf = csrf_of(&get(&w.app, &viewer, "/console/inbound").await.1);
    let (status, _) = post(
        &w.app,
        &viewer,
        &format!("/console/inbound/routes/{route_id}/delete"),
        &[("csrf", vcsrf.as_str())],
    )
    .await;
    assert_eq!(status, 403);
    let mut vwith = form.to_vec();
    vwith.push(("csrf", vcsrf.as_str()));
    let (status, _) = post(&w.app, &viewer, "/console/inbound/routes", &vwith).await;
    assert_eq!(status, 403);

    // Another tenant's user: every id of this tenant is the not-found page,
    // exactly like an id that does not exist.
    let _ = tenant(&w.app, &w.dns, &w.rx, "other.test").await;
    let other_t = tenant_id(&w.app, "other.test");
    user(&w.app, "dev@other.test", Role::Developer, Some(&other_t)).await;
    let (other, _) = sign_in(&w.app, "dev@other.test", &[]).await;
    let missing = uuid::Uuid::new_v4().to_string();
    for path in [
        format!("/console/inbound/{id}"),
        format!("/console/inbound/{id}/attachments/0"),
        format!("/console/inbound?tenant={t}"),
    ] {
        let (status, theirs, _) = get(&w.app, &other, &path).await;
        assert_eq!(status, 404, "{path}: {theirs}");
        let (_, gone, _) = get(
            &w.app,
            &other,
            &path.replace(&id, &missing).replace(&t, &missing),
        )
        .await;
        assert_eq!(theirs, gone, "{path}: looks like missing");
    }
    let (_, page, _) = get(&w.app, &other, "/console/inbound").await;
    assert!(!page.contains("Help please"));
    let ocsrf = csrf_of(&page);
    let (status, _) = post(
        &w.app,
        &other,
        &format!("/console/inbound/routes/{route_id}/delete"),
        &[("csrf", ocsrf.as_str())],
    )
    .await;
    assert_eq!(status, 404);
    // Their own endpoint list does not offer this tenant's endpoint, and
    // naming it is refused.
    assert!(!page.contains(&w.hook));

    // The developer deletes the route: gone, and the listener refuses again.
    let (status, _) = post(
        &w.app,
        &dev,
        &format!("/console/inbound/routes/{route_id}/delete"),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(status, 303);
    let routes = w.app.get("/v1/inbound/routes", &w.key).await;
    assert_eq!(routes.json["data"].as_array().unwrap().len(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = smtplib(
        w.inbound.addr(),
        "alice@sender.test",
        &["support@acme.test"],
        &msg,
    )
    .await;
    assert_eq!(out["rcpt"][0][0], 550, "{out}");
}

/// Sends `n` messages "Numbered {i}" to `to` in one SMTP session (smtplib).
async fn many(addr: std::net::SocketAddr, to: &str, n: usize) {
    let script = r#"
import smtplib, sys
port, to, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port)
for i in range(n):
    s.sendmail("bulk@sender.test", [to], f"From: bulk@sender.test\r\nTo: {to}\r\nSubject: Numbered {i}\r\n\r\nbody {i}\r\n")
s.quit()
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &addr.port().to_string(), to, &n.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn received_messages_page_with_the_listings_cursor() {
    let w = world_with(|s| s.inbound.messages_per_tenant_per_minute = 1000).await;
    let t = tenant_id(&w.app, "acme.test");
    user(&w.app, "dev@acme.test", Role::Developer, Some(&t)).await;
    let (dev, _) = sign_in(&w.app, "dev@acme.test", &[]).await;
    crate::inbound::route(
        &w,
        serde_json::json!({"match": "*@acme.test", "action": "hold"}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    many(w.inbound.addr(), "box@acme.test", 51).await;

    let (status, first, _) = get(&w.app, &dev, "/console/inbound").await;
    assert_eq!(status, 200);
    let rows = |page: &str| page.matches(">Numbered ").count();
    assert_eq!(rows(&first), 50, "a page of 50");
    let start = first
        .find("id=\"next-page\" href=\"")
        .expect("a next page link")
        + 21;
    let href = &first[start..];
    let href = href[..href.find('"').unwrap()].replace("&amp;", "&");
    let href = href.replace("&#x2f;", "/");
    let (status, second, _) = get(&w.app, &dev, &href).await;
    assert_eq!(status, 200, "{href}: {second}");
    assert_eq!(rows(&second), 1, "the 51st on the next page");
    assert!(!second.contains("id=\"next-page\""));
    // Newest first: the first page has the last sent, the second the first.
    assert!(first.contains(">Numbered 50<") && second.contains(">Numbered 0<"));
}
