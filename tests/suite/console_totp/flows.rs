//! The steps of the TOTP tests: enrolment through the account page, the
//! password step, the code step, and codes from pyotp.

use crate::common::TestApp;
use crate::console::{client, csrf_of, get, post, set_cookie, sign_in, PASSWORD};

/// The code pyotp computes from `uri` for now + `offset` steps (and the URI's
/// parameters as pyotp reads them).
pub fn pyotp(uri: &str, offset: i64) -> String {
    let script = "import sys, time, pyotp\n\
        t = pyotp.parse_uri(sys.argv[1])\n\
        assert (t.issuer, t.digits, t.interval, t.digest().name) == ('Postline', 6, 30, 'sha1'), t\n\
        print(t.at(int(time.time()), int(sys.argv[2])))";
    let out = std::process::Command::new("python3")
        .args(["-c", script, uri, &offset.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyotp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A six-digit code that is none of the three the server accepts now.
pub fn wrong_code(uri: &str) -> String {
    let window: Vec<String> = (-1..=1).map(|d| pyotp(uri, d)).collect();
    ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !window.iter().any(|w| w == c))
        .unwrap()
        .to_string()
}

/// The text of an HTML-escaped value (minijinja escapes `&`, `/`, quotes).
pub fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let at = page
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {page}"))
        + start.len();
    page[at..].split(end).next().unwrap()
}

/// Signs in with the password, sets up TOTP and turns it on with the
/// current code (after a wrong one when `wrong_first`); the session cookie,
/// the URI and the code that turned it on.
pub async fn enrol(app: &TestApp, email: &str, wrong_first: bool) -> (String, String, String) {
    let (cookie, _) = sign_in(app, email, &[]).await;
    let (status, page, _) = get(app, &cookie, "/console/account").await;
    assert_eq!(status, 200);
    assert!(page.contains("TOTP is <strong>off"), "{page}");
    let csrf = csrf_of(&page);
    let (status, _) = post(
        app,
        &cookie,
        "/console/account/totp/setup",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 303);
    let (_, page, _) = get(app, &cookie, "/console/account").await;
    let uri = unescape(between(&page, "<code id=\"totp-uri\">", "</code>"));
    let secret = between(&page, "<code id=\"totp-secret\">", "</code>");
    assert_eq!(secret.len(), 32, "160 bits in base32: {secret}");
    assert!(uri.starts_with("otpauth://totp/Postline"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}&")), "{uri}");
    if wrong_first {
        let bad = wrong_code(&uri);
        let (status, page) = post(
            app,
            &cookie,
            "/console/account/totp/enable",
            &[("csrf", &csrf), ("code", &bad)],
        )
        .await;
        assert_eq!(status, 422, "{page}");
        assert!(page.contains("id=\"totp-secret\""), "still pending: {page}");
    }
    let code = pyotp(&uri, 0);
    let (status, page) = post(
        app,
        &cookie,
        "/console/account/totp/enable",
        &[("csrf", &csrf), ("code", &code)],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let (_, page, _) = get(app, &cookie, "/console/account").await;
    assert!(page.contains("TOTP is <strong>on"), "{page}");
    assert!(
        !page.contains(secret),
        "the secret is shown only while pending"
    );
    (cookie, uri, code)
}

/// The password step: its status, the challenge cookie (`name=value`) and
/// whether a session cookie came with it.
pub async fn password_step(app: &TestApp, email: &str) -> (u16, Option<String>, bool) {
    let c = client();
    let form = c
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .unwrap();
    let (login, _) = set_cookie(&form, "postline_console_login").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let r = c
        .post(format!("{}/console/login", app.address))
        .header("cookie", login)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let session = set_cookie(&r, "postline_console").is_some();
    // (A removal, `name=`, is no challenge.)
    let challenge = set_cookie(&r, "postline_console_challenge")
        .map(|c| c.0)
        .filter(|c| !c.ends_with('='));
    if r.status() == 303 && challenge.is_some() {
        let to = r.headers().get("location").unwrap().to_str().unwrap();
        assert_eq!(to, "/console/login/totp");
    }
    (r.status().as_u16(), challenge, session)
}

/// The code step with a challenge cookie: status, location, session cookie.
pub async fn code_step(
    app: &TestApp,
    challenge: &str,
    code: &str,
) -> (u16, Option<String>, Option<String>) {
    let c = client();
    let form = c
        .get(format!("{}/console/login/totp", app.address))
        .header("cookie", challenge)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let (login, _) = set_cookie(&form, "postline_console_login").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let r = c
        .post(format!("{}/console/login/totp", app.address))
        .header("cookie", format!("{challenge}; {login}"))
        .form(&[("csrf", csrf.as_str()), ("code", code)])
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let session = set_cookie(&r, "postline_console")
        .map(|c| c.0)
        .filter(|c| c.len() > 20);
    (r.status().as_u16(), location, session)
}

/// The code step when the challenge may be void: the form GET redirects.
pub async fn code_step_maybe(
    app: &TestApp,
    challenge: &str,
    code: &str,
) -> (u16, Option<String>, Option<String>) {
    let (status, _, location) = get(app, challenge, "/console/login/totp").await;
    if status != 200 {
        return (status, location, None);
    }
    code_step(app, challenge, code).await
}
