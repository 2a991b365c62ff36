//! The static export: one HTML file with the UI's code, its style and one
//! graph inlined, that works offline from a `file://` URL.
//!
//! The graph goes into a `<script type="application/json">` element, which
//! the browser never runs; the UI reads its text. What must not happen is the
//! data ending that element early: a host or process named `</script><script>…`
//! would otherwise become live markup. So every `<`, `>` and `&` in the JSON
//! is written as a `\u00XX` escape (still the same JSON), and the page's own
//! Content-Security-Policy allows exactly the two inlined blocks, by hash.

use ring::digest::{digest, SHA256};
use serde::Serialize;

use crate::assets::{APP_CSS, APP_JS, INDEX_HTML};

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot serialise the graph: {0}")]
    Json(#[from] serde_json::Error),
    /// The built UI does not have the shape the export relies on: a build bug.
    #[error("the built web UI cannot be inlined: {0}")]
    Template(&'static str),
}

/// The self-contained HTML page showing `graph` (the collector API's graph
/// document). The UI finds the inlined graph and reads nothing else.
pub fn export_html<T: Serialize + ?Sized>(graph: &T) -> Result<String, ExportError> {
    let data = escape_json_for_html(&serde_json::to_string(graph)?);
    if contains_ignore_case(APP_JS, "</script") || APP_JS.contains("<!--") {
        return Err(ExportError::Template(
            "app.js contains `</script` or `<!--`",
        ));
    }
    if contains_ignore_case(APP_CSS, "</style") {
        return Err(ExportError::Template("app.css contains `</style`"));
    }
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; img-src data: blob:; base-uri 'none'; form-action 'none'",
        sha256_base64(APP_JS),
        sha256_base64(APP_CSS)
    );
    let html = replace_once(
        INDEX_HTML,
        r#"<link rel="stylesheet" href="app.css">"#,
        &format!("<style>{APP_CSS}</style>"),
    )?;
    let html = replace_once(
        &html,
        r#"<script src="app.js"></script>"#,
        &format!("<script type=\"application/json\" id=\"connscope-data\">{data}</script>\n<script>{APP_JS}</script>"),
    )?;
    let start = html
        .find(CSP_META)
        .ok_or(ExportError::Template("index.html has no CSP meta element"))?
        + CSP_META.len();
    let end = start
        + html[start..]
            .find('"')
            .ok_or(ExportError::Template("unterminated CSP meta element"))?;
    Ok(format!("{}{}{}", &html[..start], csp, &html[end..]))
}

const CSP_META: &str = r#"<meta http-equiv="Content-Security-Policy" content=""#;

fn replace_once(html: &str, from: &'static str, to: &str) -> Result<String, ExportError> {
    if html.matches(from).count() != 1 {
        return Err(ExportError::Template(from));
    }
    Ok(html.replacen(from, to, 1))
}

/// JSON that is safe between `<script>` tags: the same document, with the
/// characters HTML could act on (and the two JavaScript line separators)
/// written as escapes. Outside strings JSON has none of them.
fn escape_json_for_html(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(needle)
}

fn sha256_base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let hash = digest(&SHA256, text.as_bytes());
    let bytes = hash.as_ref();
    let mut out = String::with_capacity(44);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inlined_data(html: &str) -> &str {
        let open = r#"<script type="application/json" id="connscope-data">"#;
        let start = html.find(open).unwrap() + open.len();
        &html[start..start + html[start..].find("</script>").unwrap()]
    }

    #[test]
    fn hostile_strings_cannot_leave_the_data_element() {
        let hostile =
            "</script><script>alert(1)</script><!-- <img src=x onerror=alert(2)> & \u{2028}";
        let graph = json!({"nodes": [{"id": "h", "kind": "host", "label": hostile}], "edges": []});
        let html = export_html(&graph).unwrap();
        let data = inlined_data(&html);
        for bad in ["<", ">", "&", "\u{2028}"] {
            assert!(!data.contains(bad), "{bad:?} left unescaped in {data}");
        }
        // It is still the same JSON.
        let back: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(back["nodes"][0]["label"], hostile);
        // The page has exactly the scripts it was built with.
        assert_eq!(html.matches("<script").count(), 2);
    }

    #[test]
    fn the_export_inlines_everything_and_allows_only_its_own_blocks() {
        let html = export_html(&json!({"nodes": [], "edges": []})).unwrap();
        assert!(!html.contains(r#"src="app.js""#) && !html.contains(r#"href="app.css""#));
        assert!(html.contains(APP_JS) && html.contains(APP_CSS));
        let csp = html
            .split(CSP_META)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(
            csp.contains(&format!("'sha256-{}'", sha256_base64(APP_JS))),
            "{csp}"
        );
        assert!(!csp.contains("unsafe") && !csp.contains("'self'"), "{csp}");
    }

    #[test]
    fn base64_of_sha256_matches_known_values() {
        // `printf abc | openssl dgst -sha256 -binary | base64`
        assert_eq!(
            sha256_base64("abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(
            sha256_base64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
