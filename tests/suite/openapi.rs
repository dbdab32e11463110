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

    let routes = postline::routes::all();
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
