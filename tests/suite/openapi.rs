//! The OpenAPI document matches the routes actix serves: every registered
//! route is documented and every documented operation exists.

use crate::common;

use common::TestApp;

#[tokio::test]
async fn every_route_is_in_the_spec_and_the_docs_page_renders() {
    let app = TestApp::spawn().await;
    let r = app.request("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    let spec = r.json;
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().expect("paths");

    // Console pages are HTML for browsers, not the JSON API the document
    // describes (routes::Access::Console); tests/suite/console.rs covers them.
    let routes: Vec<_> = postline::routes::all()
        .into_iter()
        .filter(|e| e.access != postline::routes::Access::Console)
        .collect();
    let mut missing = Vec::new();
    for e in &routes {
        let method = e.method.as_str().to_ascii_lowercase();
        if paths.get(e.path).and_then(|p| p.get(&method)).is_none() {
            missing.push(format!("{} {}", e.method, e.path));
        }
    }
    assert!(
        missing.is_empty(),
        "routes registered in actix but missing from /openapi.json: {missing:?}"
    );

    let mut stale = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            if !routes
                .iter()
                .any(|e| e.path == path && e.method.as_str().eq_ignore_ascii_case(method))
            {
                stale.push(format!("{method} {path}"));
            }
        }
    }
    assert!(stale.is_empty(), "documented but not served: {stale:?}");

    // bearer security and problem responses are described
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let send = &paths["/v1/emails"]["post"];
    assert!(send["responses"]["4XX"]["content"].is_object(), "{send}");
    assert!(spec["components"]["schemas"]["Problem"].is_object());
    assert!(spec["components"]["schemas"]["SendRequest"].is_object());

    // every documented route answers (not 404) — a documented path really is served
    let r = app.get("/v1/tenants", &app.admin_key).await;
    assert_eq!(r.status, 200);

    let docs = app.request("GET", "/docs", None, None).await;
    assert_eq!(docs.status, 200);
    assert!(docs
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(docs.text.contains("/v1/emails/batch"));
    assert!(docs.text.contains("id=\"schema-SendRequest\""));
    assert!(
        !docs.text.contains("<script"),
        "the page needs nothing from outside"
    );
}

/// Collects every description and summary in the document, with where.
fn texts(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x.as_str() {
                    Some(s) if k == "description" || k == "summary" => {
                        out.push((at.to_string(), s.to_string()))
                    }
                    _ => texts(x, &format!("{at}/{k}"), out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| texts(x, at, out)),
        _ => {}
    }
}

/// Issue 18: parameters without descriptions, parameters a route does not
/// read, Markdown shown literally on /docs, a missing event name.
#[tokio::test]
async fn every_parameter_is_described_real_and_in_plain_text() {
    let app = TestApp::spawn().await;
    let spec = app.request("GET", "/openapi.json", None, None).await.json;
    let paths = spec["paths"].as_object().expect("paths");
    let mut undescribed = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().cloned().unwrap_or_default() {
                if p["description"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
                {
                    undescribed.push(format!("{method} {path} {}", p["name"]));
                }
            }
        }
    }
    assert!(undescribed.is_empty(), "no description: {undescribed:#?}");

    let names = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect()
    };
    // The path names the tenant; the usage of one tenant is not paginated.
    assert!(!names("/v1/tenants/{tenant}/emails", "get").contains(&"tenant_id".to_string()));
    assert!(names("/v1/emails", "get").contains(&"tenant_id".to_string()));
    let usage = names("/v1/tenants/{tenant}/usage", "get");
    assert!(
        !usage.contains(&"limit".to_string()) && !usage.contains(&"cursor".to_string()),
        "{usage:?}"
    );
    assert!(names("/v1/usage", "get").contains(&"cursor".to_string()));

    let mut all = Vec::new();
    texts(&spec, "", &mut all);
    let marked: Vec<_> = all.iter().filter(|(_, t)| t.contains('`')).collect();
    assert!(marked.is_empty(), "Markdown in descriptions: {marked:#?}");
    let html = app.request("GET", "/docs", None, None).await.text;
    assert!(!html.contains('`'), "backticks on /docs");

    let events = spec["components"]["schemas"]["CreateWebhook"]["properties"]["events"]
        ["description"]
        .as_str()
        .unwrap_or_default();
    for e in postline::webhooks::EVENTS
        .iter()
        .chain([&postline::webhooks::PING_EVENT])
    {
        assert!(
            events.contains(e),
            "{e} not in the events description: {events}"
        );
    }
}

/// Issue 14: errors are served as `application/problem+json`, and every
/// response the document describes with the `Problem` schema says so (a
/// generated client picks its decoder by the documented media type).
#[tokio::test]
async fn problem_responses_are_documented_with_the_media_type_served() {
    let app = TestApp::spawn().await;
    let spec = app.request("GET", "/openapi.json", None, None).await.json;
    let mut problems = 0;
    let mut wrong = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                for (media, content) in resp["content"].as_object().into_iter().flatten() {
                    if content["schema"]["$ref"] == "#/components/schemas/Problem" {
                        problems += 1;
                        if media != "application/problem+json" {
                            wrong.push(format!("{method} {path} {status}: {media}"));
                        }
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "Problem documented as: {wrong:#?}");
    assert!(
        problems > 50,
        "only {problems} problem responses documented"
    );

    let r = app.get("/v1/tenants", "pl_admin_nokey_nosecret").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(
        spec["paths"]["/v1/tenants"]["get"]["responses"]["4XX"]["content"]
            ["application/problem+json"]
            .is_object(),
        "{}",
        spec["paths"]["/v1/tenants"]["get"]
    );
}
