//! Console message list (issue 17): the time to answer `GET /console/messages`
//! (session lookup, the emails listing service, the HTML rendering) with many
//! messages in the database, against the same page of the same data as JSON
//! (`GET /v1/emails?tenant_id=…`, the baseline: the listing without the
//! page). Rows are made with one `INSERT … SELECT generate_series` (1M by
//! default; `POSTLINE_BENCH_CONSOLE_ROWS`), half in the measured tenant. The
//! two requests alternate on one keep-alive connection each, over loopback,
//! so what differs is server-side work; p50/p99 of each, and the ratio.
//!
//! Run: `deploy/dev bench console`.

mod common;

use std::time::{Duration, Instant};

use common::{app, print_figure, BenchEnv, Samples, Unit};
use diesel::prelude::*;
use postline::console::users::{self, Role};

fn main() {
    let Some(env) = BenchEnv::from_env("console") else {
        return;
    };
    env.print_header();
    common::runtime().block_on(run(&env));
}

async fn run(env: &BenchEnv) {
    let db = env.fresh_database();
    let rows = env.param("CONSOLE_ROWS", 1_000_000, 2_000);
    let a = app::BenchApp::start(app::settings(&db.url, None)).await;
    let tenants = a.tenants(2).await;
    let (t, other) = (&tenants[0].id, &tenants[1].id);

    // Half the rows in the measured tenant, half in another: the tenant
    // index, not the table size, bounds the page.
    let started = Instant::now();
    let mut conn = PgConnection::establish(&db.url).expect("bench db");
    diesel::sql_query(format!(
        "INSERT INTO emails (tenant_id, id, status, attempts, expires_at, message_id, from_addr, \
           envelope_from, to_addrs, subject, text_body, tags, created_at) \
         SELECT CASE WHEN g % 2 = 0 THEN '{t}'::uuid ELSE '{other}'::uuid END, gen_random_uuid(), \
           (ARRAY['delivered','bounced','failed'])[1 + g % 3], 1, now() + interval '1 day', \
           '<' || g || '@bench.example>', 'shop@bench.example', 'shop@bench.example', \
           ARRAY['buyer' || g || '@example.com'], 'Order #' || g, 'Thanks', \
           jsonb_build_object('kind', 'receipt'), now() - g * interval '1 second' \
         FROM generate_series(1, {rows}) g"
    ))
    .execute(&mut conn)
    .expect("generate rows");
    diesel::sql_query("ANALYZE emails")
        .execute(&mut conn)
        .unwrap();
    print_figure(
        "rows",
        format!("{rows} messages ({:.1?} to insert)", started.elapsed()),
    );

    let email = "bench-admin@example.com";
    let password = "bench password 123";
    users::create(
        &a.state.pool,
        &postline::audit::Actor::cli(),
        email,
        Role::Admin,
        None,
        Some(password),
        3600,
    )
    .await
    .expect("console admin");
    let user = users::check_login(&a.state.pool, email, password)
        .await
        .unwrap()
        .unwrap();
    let token =
        postline::console::sessions::open_session(&a.state.pool, user.owner(), user.id, 3600)
            .await
            .unwrap();
    let cookie = format!("postline_console={}", token.expose());

    let base = format!("http://{}", a.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2)
        .build()
        .unwrap();
    let html_url = format!("{base}/console/messages?tenant={t}");
    let json_url = format!("{base}/v1/emails?tenant_id={t}&limit=50");
    let (warm, n) = (env.iters(50, 3), env.iters(1_000, 10));
    let (mut page, mut api) = (Samples::with_capacity(n), Samples::with_capacity(n));
    for i in 0..warm + n {
        let t0 = Instant::now();
        let r = client
            .get(&html_url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "console page");
        let body = r.bytes().await.unwrap();
        let d_page = t0.elapsed();
        assert!(body.len() > 10_000, "a page of 50 rows");
        let t0 = Instant::now();
        let r = client
            .get(&json_url)
            .bearer_auth(&a.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "JSON listing");
        r.bytes().await.unwrap();
        let d_api = t0.elapsed();
        if i >= warm {
            page.push(d_page);
            api.push(d_api);
        }
    }
    let (p, j) = (page.summary(), api.summary());
    p.print("console /console/messages (50 rows)", Unit::Millis);
    j.print("baseline GET /v1/emails (50 rows)", Unit::Millis);
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64().max(1e-9);
    let q = page.percentiles(&[0.99]);
    let b = api.percentiles(&[0.99]);
    print_figure(
        "p99 ratio page / JSON",
        format!("{:.2}x", ratio(q[0], b[0])),
    );
}
