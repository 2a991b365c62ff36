//! The built UI, embedded.

/// Content-Security-Policy of the served UI: only its own script, style and
/// API; no inline script, no plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) const INDEX_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/web/index.html"));
pub(crate) const APP_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/web/app.js"));
pub(crate) const APP_CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/web/app.css"));

/// One file of the UI, ready to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

impl Asset {
    /// Every header the response should carry, `Content-Type` included. The
    /// security headers go on every asset, so no route can forget them.
    pub fn headers(&self) -> [(&'static str, &'static str); 5] {
        [
            ("content-type", self.content_type),
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            // Assets change with the binary and are small: always revalidate.
            ("cache-control", "no-cache"),
        ]
    }
}

/// The UI file at a request path: `/` (or empty) is the page itself, then
/// `/app.js` and `/app.css`. Anything else is `None` (a 404); API paths are
/// the collector's.
pub fn asset(path: &str) -> Option<Asset> {
    let (bytes, content_type) = match path.trim_start_matches('/') {
        "" | "index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(Asset {
        bytes: bytes.as_bytes(),
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served() {
        let page = asset("/").expect("index");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        let html = std::str::from_utf8(page.bytes).unwrap();
        assert!(html.contains(r#"<script src="app.js"></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="app.css">"#));
        assert_eq!(asset("/index.html"), Some(page));
        assert!(
            asset("/app.js").unwrap().bytes.len() > 50_000,
            "the bundle holds D3"
        );
        assert_eq!(
            asset("/app.css").unwrap().content_type,
            "text/css; charset=utf-8"
        );
    }

    #[test]
    fn unknown_paths_are_not_assets() {
        for path in [
            "/api/v1/graph",
            "/../Cargo.toml",
            "/app.js.map",
            "/web/src/app.js",
            "/APP.JS",
        ] {
            assert_eq!(asset(path), None, "{path}");
        }
    }

    #[test]
    fn every_asset_carries_the_security_headers() {
        let headers = asset("/app.js").unwrap().headers();
        assert!(headers.contains(&("content-security-policy", CONTENT_SECURITY_POLICY)));
        assert!(headers.contains(&("x-content-type-options", "nosniff")));
        assert!(
            !CONTENT_SECURITY_POLICY.contains("unsafe"),
            "no unsafe-inline or unsafe-eval"
        );
    }

    #[test]
    fn the_bundle_fetches_nothing_from_the_internet() {
        for (name, text) in [("index.html", INDEX_HTML), ("app.css", APP_CSS)] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name} names an outside URL"
            );
        }
        // D3's bundle names the SVG/XHTML namespaces (not fetched); nothing else.
        let urls: Vec<&str> = APP_JS
            .match_indices("http")
            .map(|(i, _)| &APP_JS[i..(i + 40).min(APP_JS.len())])
            .collect();
        assert!(
            urls.iter().all(|u| u.starts_with("http://www.w3.org/")),
            "{urls:?}"
        );
    }
}
