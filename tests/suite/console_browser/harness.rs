//! The browser under the console tests: a chromedriver child, headless
//! chromium profiles, waits, and `check_page` (title, widths, axe-core,
//! screenshots).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::console::PASSWORD;

/// A chromedriver child on a free loopback port, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (deploy/dev test installs Debian's chromium-driver)");
    // Owned at once, so the child is killed and reaped whatever happens next.
    let d = Driver { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

/// A headless chromium with a profile of its own (its own cookie store).
pub async fn browser(d: &Driver, profile: &tempdir::Dir) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", format!("--user-data-dir={}", profile.0.display())],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a chromium session")
}

pub mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("{name}-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-shots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

pub async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => {
            let url = c.current_url().await.unwrap();
            let page = c.source().await.unwrap_or_default();
            let main = page.split("<main").nth(1).unwrap_or(&page);
            panic!("{css} on {url}: {e}\n{}", &main[..main.len().min(1500)]);
        }
    }
}

/// The text of `css` once it equals `want` (a click's navigation may still
/// be under way when the click returns), or a panic after 15 s.
pub async fn wait_text(c: &Client, css: &str, want: &str) {
    for _ in 0..150 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.text().await.is_ok_and(|t| t == want) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text(c, css).await, want, "{css}");
}

/// Waits until the text of `css` contains `needle` (or, with `present`
/// false, no longer does).
pub async fn wait_contains(c: &Client, css: &str, needle: &str, present: bool) {
    for _ in 0..150 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.text().await.is_ok_and(|t| t.contains(needle) == present) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{css}: containing {needle:?} is not {present}: {}",
        text(c, css).await
    );
}

/// Waits until the page's path ends with `path`.
pub async fn wait_path(c: &Client, path: &str) {
    for _ in 0..150 {
        if c.current_url()
            .await
            .is_ok_and(|u| u.path().ends_with(path))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not on {path}: {}", c.current_url().await.unwrap());
}

pub async fn fill(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(value)
        .await
        .unwrap();
}

pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

pub async fn sign_in(c: &Client, base: &str, email: &str) {
    c.goto(&format!("{base}/console/login")).await.unwrap();
    fill(c, "#email", email).await;
    fill(c, "#password", PASSWORD).await;
    click(c, "#sign-in").await;
}

/// Widths every page is checked and shot at: a phone and a laptop.
pub const WIDTHS: [u32; 2] = [390, 1280];

/// Checks the page `c` shows and saves its screenshots as
/// `target/console-shots/{name}-{width}.png` (the whole page):
/// - its `<title>` is short plain text (no markup leaked into it);
/// - at each of [`WIDTHS`], nothing is wider than the window and no word
///   of up to 24 letters or digits is broken across lines (long ids,
///   addresses and code may wrap, in their own boxes);
/// - axe-core finds no serious or critical violation.
pub async fn check_page(c: &Client, name: &str) {
    let url = c.current_url().await.unwrap();
    let title = c.title().await.unwrap();
    assert!(
        !title.is_empty() && title.chars().count() <= 80 && !title.contains('<'),
        "{name} ({url}): the title is not short text: {title:?}"
    );
    for width in WIDTHS {
        c.set_window_size(width, 900).await.unwrap();
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        if fits != json!(true) {
            let wide = c.execute(TOO_WIDE, vec![]).await.unwrap();
            panic!("{name} at {width} px is wider than the window ({url}): {wide}");
        }
        let broken = c.execute(BROKEN_WORDS, vec![]).await.unwrap();
        assert_eq!(
            broken,
            json!([]),
            "{name} at {width} px breaks words mid-letter ({url})"
        );
        let height = c
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 8000) as u32;
        // The window's height includes the browser's own bars.
        let chrome = c
            .execute("return window.outerHeight - window.innerHeight", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(0)
            .min(300) as u32;
        c.set_window_size(width, height + chrome).await.unwrap();
        shot(c, &format!("{name}-{width}")).await;
    }
    c.set_window_size(1280, 1000).await.unwrap();
    axe(c, name).await;
}

/// The elements that reach past the window's right edge, outside any
/// scrolling box (for the failure message).
const TOO_WIDE: &str = r##"
const out = ["scrollWidth " + document.documentElement.scrollWidth + " > " + window.innerWidth];
for (const el of document.body.querySelectorAll("*")) {
  const r = el.getBoundingClientRect();
  if (r.right <= window.innerWidth + 0.5 || out.length >= 8) continue;
  let p = el.parentElement, scrolled = false;
  while (p) { if (getComputedStyle(p).overflowX !== "visible") { scrolled = true; break; } p = p.parentElement; }
  out.push((scrolled ? "(in a scrolling box) " : "") + el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + "." + el.className + " right=" + Math.round(r.right));
}
return out;
"##;

/// Words (runs of 2-24 letters or digits) whose glyphs sit on more than one
/// line: a table squeezed until "State" reads "Sta te".
const BROKEN_WORDS: &str = r#"
const skip = "script, style, svg, pre, code, input, textarea, .id, .visually-hidden, .skip, h2.url";
const out = [];
const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
let n;
while ((n = walk.nextNode()) && out.length < 20) {
  const el = n.parentElement;
  if (!el || el.closest(skip) || !el.getClientRects().length) continue;
  const re = /[A-Za-z0-9]{2,24}/g;
  let m;
  while ((m = re.exec(n.data))) {
    const r = document.createRange();
    r.setStart(n, m.index);
    r.setEnd(n, m.index + m[0].length);
    const tops = new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.top)));
    if (tops.size > 1) out.push(m[0] + " in <" + el.tagName.toLowerCase() + ">");
  }
}
return out;
"#;

/// axe-core's own build, pinned in tests/console/package.json.
fn axe_source() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/console/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: install it with `npm ci` in tests/console (deploy/dev test does)",
            path.display()
        )
    })
}

/// Runs axe-core on the page (not inside the sandboxed mail frame, which
/// shows the tenant's HTML) and fails on any serious or critical violation.
pub async fn axe(c: &Client, name: &str) {
    c.execute(&axe_source(), vec![]).await.unwrap();
    let found = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
axe.run(document, { iframes: false, resultTypes: ["violations"] })
  .then(r => done(r.violations
    .filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " " + (n.failureSummary || "")) }))))
  .catch(e => done([{ id: "axe-error", help: String(e) }]));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        found,
        json!([]),
        "{name}: axe-core found serious or critical violations ({})",
        c.current_url().await.unwrap()
    );
}
