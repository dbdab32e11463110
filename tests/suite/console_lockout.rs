//! The sign-in throttle per e-mail address (`console.login_failures_per_minute`)
//! used to be a lock-out anyone could trigger: wrong passwords for a user's
//! address made the user's right password 429 as well (issue 22, the class
//! of finding 6). A browser the user signed in with before holds a device
//! cookie for that address and is throttled only by its own failures; a
//! browser new to the user is still throttled by the address's failures.

use postline::console::users::Role;

use crate::common::TestApp;
use crate::console::{client, csrf_of, set_cookie, user, PASSWORD};

/// One sign-in attempt from `addr` (the trusted proxy's X-Forwarded-For),
/// with the browser's device cookie if any: the status and the device
/// cookie the answer sets.
async fn attempt(
    app: &TestApp,
    addr: &str,
    email: &str,
    password: &str,
    device: Option<&str>,
) -> (u16, Option<String>) {
    let c = client();
    let form = c
        .get(format!("{}/console/login", app.address))
        .header("x-forwarded-for", addr)
        .send()
        .await
        .unwrap();
    let (login_cookie, _) = set_cookie(&form, "postline_console_login").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let cookies = match device {
        Some(d) => format!("{login_cookie}; {d}"),
        None => login_cookie,
    };
    let r = c
        .post(format!("{}/console/login", app.address))
        .header("x-forwarded-for", addr)
        .header("cookie", cookies)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let device = set_cookie(&r, "postline_console_device").map(|(c, _)| c);
    (r.status().as_u16(), device)
}

#[tokio::test]
async fn strangers_failing_sign_ins_for_an_address_do_not_lock_out_its_known_browsers() {
    let app = TestApp::spawn_with(|s| {
        s.console.login_failures_per_minute = 3;
        s.auth.trust_x_forwarded_for = true;
    })
    .await;
    user(&app, "ann@example.com", Role::Admin, None).await;
    user(&app, "bob@example.com", Role::Admin, None).await;
    let (status, device) = attempt(&app, "10.0.0.1", "ann@example.com", PASSWORD, None).await;
    assert_eq!(status, 303);
    let device = device.expect("a device cookie with the session");

    // A stranger spends ann's throttle from their own addresses.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let addr = format!("10.0.1.{i}");
        statuses.push(
            attempt(&app, &addr, "ann@example.com", "guess!guess!", None)
                .await
                .0,
        );
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // A browser new to ann is throttled (distributed guessing stays slow)…
    let (status, _) = attempt(&app, "10.0.0.2", "ann@example.com", PASSWORD, None).await;
    assert_eq!(status, 429);
    // …ann's own browser signs in.
    let (status, _) = attempt(&app, "10.0.0.1", "ann@example.com", PASSWORD, Some(&device)).await;
    assert_eq!(status, 303);
    // Her cookie vouches for her address only: bob's throttle applies to it.
    for _ in 0..3 {
        attempt(&app, "10.0.2.1", "bob@example.com", "guess!guess!", None).await;
    }
    let (status, _) = attempt(&app, "10.0.0.1", "bob@example.com", PASSWORD, Some(&device)).await;
    assert_eq!(status, 429);
    // A known browser has a budget of its own: 3 failures, then 429.
    let mut statuses = Vec::new();
    for password in ["x-wrong-1-x", "x-wrong-2-x", "x-wrong-3-x", PASSWORD] {
        let (status, _) =
            attempt(&app, "10.0.0.3", "ann@example.com", password, Some(&device)).await;
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
}
