//! The Reputation page (issue 25) in a real browser: figures driven by real
//! DSNs over SMTP (the parent module's setup), the page reached from the
//! tenant page (admins) and from the navigation (the tenant's own team),
//! its charts' bars carrying the rates the figures make, thresholds drawn,
//! another tenant's page "not found"; paused, then warned tenants listed
//! first on the tenants list and the overview. Titles, widths, axe-core and
//! screenshots as every console page (`target/console-shots/reputation-*`).

use fantoccini::{Client, Locator};
use postline::console::users::Role;
use serde_json::{json, Value};

use crate::console::user;
use crate::console_browser::harness::*;

/// The `<title>` texts of a chart's bars (the figure's `id`).
async fn bar_titles(c: &Client, figure: &str) -> Vec<String> {
    let v = c
        .execute(
            &format!(
                "return Array.from(document.querySelectorAll('#{figure} svg rect title')).map(t => t.textContent)"
            ),
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

fn rows(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn the_reputation_page_charts_the_rates_against_the_thresholds_in_a_real_browser() {
    let s = super::setup(|_| {}).await;
    let base = s.app.address.clone();
    // Zulu: 3 delivered + 1 hard bounce = 25 % ≥ 8 % → paused. Aardvark
    // (monitor): 1 of 2 → warning only. Bravo: healthy. Names so that the
    // alphabet alone would list them the other way round.
    let (zulu, key_z) = s.tenant("Zulu", json!({"min_volume": 2})).await;
    let (aardvark, key_a) = s
        .tenant("Aardvark", json!({"mode": "monitor", "min_volume": 1}))
        .await;
    let (bravo, key_b) = s.tenant("Bravo", json!({"min_volume": 2})).await;
    for i in 0..4 {
        s.delivered(&key_z, &format!("z{i}@example.org")).await;
    }
    s.delivered(&key_a, "a0@example.org").await;
    s.delivered(&key_a, "a1@example.org").await;
    s.delivered(&key_b, "b0@example.org").await;
    s.hard_bounce("z0@example.org").await;
    s.hard_bounce("a0@example.org").await;
    let rep = s.wait_status(&key_z, "paused").await;
    assert_eq!(super::window(&rep), (3, 1, 0), "{rep}");
    s.wait_status(&key_a, "warning").await;
    assert_eq!(s.reputation(&key_b).await["status"], "healthy");

    user(&s.app, "admin@platform.test", Role::Admin, None).await;
    user(&s.app, "owner@zulu.test", Role::Owner, Some(&zulu)).await;
    let d = driver().await;
    let (p1, p2) = (
        tempdir::Dir::new("reputation-admin"),
        tempdir::Dir::new("reputation-owner"),
    );
    let admin = browser(&d, &p1).await;
    sign_in(&admin, &base, "admin@platform.test").await;
    wait_path(&admin, "/console").await;

    // The overview and the tenants list: paused, then warning, first.
    let attention = admin
        .execute(
            "return Array.from(document.querySelectorAll('#attention > li')).map(l => l.dataset.tenant)",
            vec![],
        )
        .await
        .unwrap();
    let attention = rows(&attention);
    assert_eq!(attention.first(), Some(&zulu), "{attention:?}");
    assert_eq!(attention.get(1), Some(&aardvark), "{attention:?}");
    assert!(!attention.contains(&bravo), "{attention:?}");
    assert!(text(&admin, "#attention")
        .await
        .contains("reputation paused: bounce rate 25.00%"));
    check_page(&admin, "reputation-overview").await;
    admin
        .goto(&format!("{base}/console/tenants"))
        .await
        .unwrap();
    let flagged = admin
        .execute(
            "return Array.from(document.querySelectorAll('#flagged tbody tr')).map(r => r.dataset.tenant)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows(&flagged), vec![zulu.clone(), aardvark.clone()]);
    check_page(&admin, "reputation-tenants").await;

    // From the tenant page to its Reputation page.
    admin
        .goto(&format!("{base}/console/tenants/{zulu}"))
        .await
        .unwrap();
    click(&admin, "#reputation-link").await;
    wait_path(&admin, &format!("/console/tenants/{zulu}/reputation")).await;
    let h1 = text(&admin, "h1").await;
    assert!(h1.starts_with("Reputation of Zulu"), "{h1}");
    assert_eq!(text(&admin, "#rep-status").await, "paused");
    assert!(text(&admin, "#rep-reason")
        .await
        .contains("bounce rate 25.00%"));
    let window = text(&admin, "#rep-windows tr[data-hours='24']").await;
    assert!(window.contains("25.000 %"), "{window}");
    assert!(text(&admin, "#rep-windows tr[data-hours='168']")
        .await
        .contains("25.000 %"));
    assert!(text(&admin, "#rep-domains").await.contains("acme.test"));
    admin
        .find(Locator::Css("#reinstate"))
        .await
        .expect("the reinstate button");

    // The charts: 30 bars each, today's carrying the figures' rates (1 of
    // 4 bounced, none complained), the thresholds of the policy drawn.
    let today = chrono::Utc::now().date_naive().format("%-d %b").to_string();
    let bounces = bar_titles(&admin, "bounce-chart").await;
    assert_eq!(bounces.len(), 30, "{bounces:?}");
    assert_eq!(bounces[29], format!("{today} Bounce rate: 25%"));
    assert!(
        bounces[..29].iter().all(|t| t.ends_with(": 0%")),
        "{bounces:?}"
    );
    let complaints = bar_titles(&admin, "complaint-chart").await;
    assert_eq!(complaints[29], format!("{today} Complaint rate: 0%"));
    let legend = text(&admin, "#bounce-chart svg").await;
    assert!(
        legend.contains("Warning at 4%") && legend.contains("Pause at 8%"),
        "{legend}"
    );
    let legend = text(&admin, "#complaint-chart svg").await;
    assert!(
        legend.contains("Warning at 0.1%") && legend.contains("Pause at 0.3%"),
        "{legend}"
    );
    // The bounce axis reaches the 25 % bar: ticks of 10 % up to 30 %.
    let ticks = admin
        .execute(
            "return Array.from(document.querySelectorAll('#bounce-chart svg text.axis')).map(t => t.textContent)",
            vec![],
        )
        .await
        .unwrap();
    let ticks = rows(&ticks);
    assert_eq!(ticks[..4], ["0%", "10%", "20%", "30%"], "{ticks:?}");
    assert!(text(&admin, "#rep-days").await.contains("25.000 %"));
    check_page(&admin, "reputation-admin").await;

    // The tenant's owner: a Reputation link in their navigation; another
    // tenant's page is "not found", like an unknown one.
    let owner = browser(&d, &p2).await;
    sign_in(&owner, &base, "owner@zulu.test").await;
    wait_path(&owner, "/console").await;
    click(&owner, "nav a[href$='/reputation']").await;
    wait_path(&owner, &format!("/console/tenants/{zulu}/reputation")).await;
    assert_eq!(text(&owner, "#rep-status").await, "paused");
    assert!(text(&owner, "#reputation-paused")
        .await
        .contains("bounce rate 25.00%"));
    assert!(owner.find(Locator::Css("#reinstate")).await.is_err());
    assert_eq!(
        bar_titles(&owner, "bounce-chart").await[29],
        format!("{today} Bounce rate: 25%")
    );
    check_page(&owner, "reputation-owner").await;
    for other in [bravo.clone(), uuid::Uuid::new_v4().to_string()] {
        owner
            .goto(&format!("{base}/console/tenants/{other}/reputation"))
            .await
            .unwrap();
        assert_eq!(text(&owner, "h1").await, "Not found");
    }

    // Reinstated from the page: healthy, the figures restart.
    click(&admin, "#reinstate").await;
    wait_path(&admin, &format!("/console/tenants/{zulu}")).await;
    admin
        .goto(&format!("{base}/console/tenants/{zulu}/reputation"))
        .await
        .unwrap();
    assert_eq!(text(&admin, "#rep-status").await, "healthy");
    assert!(text(&admin, "#rep-windows tr[data-hours='24']")
        .await
        .contains("0.000 %"));
    admin.close().await.unwrap();
    owner.close().await.unwrap();
}
