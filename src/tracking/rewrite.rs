//! Rewrites a message's bodies for tracking, after templates rendered and
//! before DKIM signs (the worker's prepare step): HTML `<a href>` links
//! through lol_html's streaming tokenizer (no regular expressions over
//! HTML), plain-text links when asked, and the open pixel before `</body>`
//! (or at the end). Left as they are: anything but absolute `http(s)` URLs
//! (`mailto:`, `tel:`, `#anchors`, relative links), links marked
//! `data-pl-notrack` (the attribute is removed), the unsubscribe links
//! ([`Plan::untracked`]), and targets longer than `tracking.max_url_bytes`.

use std::cell::Cell;
use std::rc::Rc;

use lol_html::html_content::ContentType;
use lol_html::{element, end, end_tag, rewrite_str, RewriteStrSettings};

use super::token::{is_web_url, Kind, Link, LinkKeys};

/// Everything one message's rewriting needs.
pub struct Plan {
    pub keys: LinkKeys,
    /// `https://track.acme.com` or `tracking.public_url`, no trailing `/`.
    pub base: String,
    pub opens: bool,
    pub html_links: bool,
    pub text_links: bool,
    /// Tenant, message and recipient (kind and URL are set per link).
    pub link: Link,
    /// URLs never rewritten: the message's `List-Unsubscribe` targets and
    /// anything under an unsubscribe prefix (`{public_url}/u/`).
    pub untracked: Vec<String>,
    pub max_url_bytes: usize,
    /// `tracking.max_copies_bytes`: what one message's per-recipient copies
    /// may take together.
    pub max_copies_bytes: usize,
}

impl Plan {
    /// Whether `recipients` copies of `copy_len` bytes each stay within
    /// `tracking.max_copies_bytes`.
    pub fn copies_fit(&self, copy_len: usize, recipients: usize) -> bool {
        copy_len.saturating_mul(recipients) <= self.max_copies_bytes
    }

    /// The plan whose links and pixel name `recipient` (one copy's).
    pub fn for_recipient(&mut self, recipient: Option<&str>) -> &Plan {
        self.link.recipient = recipient.map(str::to_string);
        self
    }

    /// The tracked form of `url`, or `None` to leave it.
    fn click(&self, url: &str) -> Option<String> {
        let url = url.trim();
        if !is_web_url(url)
            || url.len() > self.max_url_bytes
            || self.untracked.iter().any(|u| url.starts_with(u.as_str()))
            || url.starts_with(&format!("{}/c/", self.base))
        {
            return None;
        }
        let link = Link {
            kind: Kind::Click,
            url: Some(url.to_string()),
            ..self.link.clone()
        };
        Some(format!("{}/c/{}", self.base, self.keys.token(&link)?))
    }

    fn pixel(&self) -> Option<String> {
        let link = Link {
            kind: Kind::Open,
            url: None,
            ..self.link.clone()
        };
        Some(format!(
            "<img src=\"{}/o/{}.gif\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0;width:1px;height:1px\">",
            self.base,
            self.keys.token(&link)?
        ))
    }

    /// The HTML body rewritten.
    pub fn html(&self, html: &str) -> anyhow::Result<String> {
        let pixel = if self.opens { self.pixel() } else { None };
        let placed = Rc::new(Cell::new(false));
        let (in_body, at_end) = (placed.clone(), placed.clone());
        let body_pixel = pixel.clone();
        let at_end_pixel = pixel;
        let settings = RewriteStrSettings::new()
            .append_element_content_handler(element!("a[href]", |el| {
                if el.has_attribute("data-pl-notrack") {
                    el.remove_attribute("data-pl-notrack");
                    return Ok(());
                }
                if !self.html_links {
                    return Ok(());
                }
                let Some(href) = el.get_attribute("href") else {
                    return Ok(());
                };
                if let Some(tracked) = self.click(&decode_entities(&href)) {
                    el.set_attribute("href", &tracked)?;
                }
                Ok(())
            }))
            .append_element_content_handler(element!("body", move |el| {
                if let (Some(p), Some(handlers)) = (body_pixel.clone(), el.end_tag_handlers()) {
                    let placed = in_body.clone();
                    handlers.push(end_tag!(move |t| {
                        t.before(&p, ContentType::Html);
                        placed.set(true);
                        Ok(())
                    }));
                }
                Ok(())
            }))
            .append_document_content_handler(end!(move |end| {
                if let Some(p) = at_end_pixel.as_deref().filter(|_| !at_end.get()) {
                    end.append(p, ContentType::Html);
                }
                Ok(())
            }));
        Ok(rewrite_str(html, settings)?)
    }

    /// The plain-text body with its `http(s)://` links rewritten: a link
    /// starts at a line start, after white space or `<([`, and runs to white
    /// space or `>)]"`, trailing punctuation excluded.
    pub fn text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = next_link(rest) {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let mut len = tail
                .find(|c: char| c.is_whitespace() || matches!(c, '>' | ')' | ']' | '"' | '<'))
                .unwrap_or(tail.len());
            while len > 0 && tail[..len].ends_with(['.', ',', ';', ':', '!', '?', '\'']) {
                len -= 1;
            }
            let url = &tail[..len];
            match self.click(url) {
                Some(t) => out.push_str(&t),
                None => out.push_str(url),
            }
            rest = &tail[len..];
            if len == 0 {
                // Cannot happen (a scheme is never punctuation); stay finite.
                out.push_str(rest);
                return out;
            }
        }
        out.push_str(rest);
        out
    }
}

/// Where the next `http://` or `https://` link starts in `s`.
fn next_link(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("http").map(|i| i + from) {
        let scheme = lower[i..].starts_with("http://") || lower[i..].starts_with("https://");
        let boundary = i == 0
            || lower[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_whitespace() || matches!(c, '<' | '(' | '[' | '"'));
        if scheme && boundary {
            return Some(i);
        }
        from = i + 4;
    }
    None
}

/// An attribute value as the browser reads it (`&amp;` → `&`, numeric
/// references): what the link really points to.
fn decode_entities(v: &str) -> String {
    if !v.contains('&') {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let name = &tail[1..end];
        let ch = match name {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32),
            n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn plan(keys: &LinkKeys) -> Plan {
        Plan {
            keys: keys.clone(),
            base: "https://t.example".into(),
            opens: true,
            html_links: true,
            text_links: true,
            link: Link {
                kind: Kind::Click,
                tenant_id: Uuid::new_v4(),
                email_id: Uuid::new_v4(),
                recipient: Some("r@example.org".into()),
                url: None,
            },
            untracked: vec![
                "https://t.example/u/".into(),
                "https://list.example/unsub?x=1".into(),
            ],
            max_url_bytes: 2048,
            max_copies_bytes: 1 << 20,
        }
    }

    fn target(keys: &LinkKeys, tracked: &str) -> String {
        let token = tracked.strip_prefix("https://t.example/c/").expect(tracked);
        keys.verify(Kind::Click, token).unwrap().url.unwrap()
    }

    #[test]
    fn web_links_are_rewritten_and_the_rest_left() {
        let k = LinkKeys::new(&[3; 32]);
        let p = plan(&k);
        let html = r##"<html><body><a href="https://shop.example/a?x=1&amp;y=2">Shop</a>
<a href="mailto:a@b.example">m</a><a href="tel:+1">t</a><a href="#top">#</a><a href="/rel">r</a>
<a data-pl-notrack href="https://keep.example/">k</a><a href="https://t.example/u/TOKEN">u</a>
<a href="https://list.example/unsub?x=1">l</a></body></html>"##;
        let out = p.html(html).unwrap();
        let hrefs: Vec<&str> = out
            .split("href=\"")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        assert_eq!(target(&k, hrefs[0]), "https://shop.example/a?x=1&y=2");
        assert_eq!(
            &hrefs[1..],
            &[
                "mailto:a@b.example",
                "tel:+1",
                "#top",
                "/rel",
                "https://keep.example/",
                "https://t.example/u/TOKEN",
                "https://list.example/unsub?x=1"
            ]
        );
        assert!(!out.contains("data-pl-notrack"));
        let pixel = out.find("/o/").unwrap();
        assert!(pixel < out.find("</body>").unwrap(), "{out}");
        assert_eq!(out.matches("<img").count(), 1);
    }

    #[test]
    fn the_pixel_goes_at_the_end_without_a_body_and_only_when_asked() {
        let k = LinkKeys::new(&[3; 32]);
        let mut p = plan(&k);
        let out = p
            .html("<p>Hi <a href=\"https://a.example/\">a</a></p>")
            .unwrap();
        assert!(
            out.starts_with("<p>Hi <a href=\"https://t.example/c/"),
            "{out}"
        );
        assert!(
            out.ends_with(
                ".gif\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0;width:1px;height:1px\">"
            ),
            "{out}"
        );
        p.opens = false;
        p.html_links = false;
        let same = "<p>Hi <a href=\"https://a.example/\">a</a></p>";
        assert_eq!(p.html(same).unwrap(), same);
    }

    #[test]
    fn text_links_are_found_by_their_scheme() {
        let k = LinkKeys::new(&[3; 32]);
        let p = plan(&k);
        let out = p.text("See https://a.example/x. Or (http://b.example/y), mail a@https.example\nhttps://t.example/u/abc");
        let tracked: Vec<&str> = out
            .split_whitespace()
            .filter(|w| w.contains("/c/"))
            .collect();
        assert_eq!(tracked.len(), 2, "{out}");
        assert!(out.contains("https://t.example/u/abc"));
        assert!(out.contains(". Or ("));
        assert!(out.contains("mail a@https.example"));
        assert_eq!(
            target(&k, tracked[0].trim_end_matches('.')),
            "https://a.example/x"
        );
    }

    #[test]
    fn copies_fit_up_to_the_bound_and_not_past_it() {
        let k = LinkKeys::new(&[3; 32]);
        let p = plan(&k);
        assert!(p.copies_fit(1 << 19, 2), "at the bound");
        assert!(!p.copies_fit((1 << 19) + 1, 2), "one byte past it");
        assert!(p.copies_fit(1 << 20, 1));
        assert!(!p.copies_fit(usize::MAX, 50), "no overflow");
    }

    #[test]
    fn entities_decode_as_a_browser_reads_them() {
        assert_eq!(
            decode_entities("a&amp;b&#38;c&#x26;d&bogus;e&"),
            "a&b&c&d&bogus;e&"
        );
    }
}
