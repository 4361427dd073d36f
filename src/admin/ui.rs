//! The Admin UI's files, served at `/admin/` from its npm install (`admin/`, `npm ci`):
//! `@socket.io/admin-ui`'s built UI (`ui/dist`), and the fonts its `index.html` would load
//! from CDNs, from `@fontsource/roboto` and `@mdi/font`, so the UI works offline. The page is
//! rewritten as it is served: its two CDN links point at those packages. (The connection form's
//! server URL is left for the user to type, as upstream: a URL filled in would make the UI try
//! to connect, without credentials, before the form is shown.)

use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Where the UI lives in the URL space.
pub const PREFIX: &str = "/admin";

/// What a request for a UI path gets.
#[derive(Debug, PartialEq, Eq)]
pub enum UiResponse {
    /// `/admin` → `/admin/` (the page's relative links need the slash).
    Redirect(&'static str),
    File {
        body: Bytes,
        content_type: &'static str,
    },
    NotFound,
}

const DIST: &str = "node_modules/@socket.io/admin-ui/ui/dist";
const ROBOTO: &str = "node_modules/@fontsource/roboto";
const MDI: &str = "node_modules/@mdi/font";

/// The CDN links of the package's `index.html` and what replaces them.
const ROBOTO_CDN: &str =
    r#"<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto:100,300,400,500,700,900">"#;
const MDI_CDN: &str =
    r#"<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@mdi/font@latest/css/materialdesignicons.min.css">"#;
const MDI_LOCAL: &str = r#"<link rel="stylesheet" href="fonts/mdi/css/materialdesignicons.min.css">"#;

/// Answers a request for `path` (which starts with [`PREFIX`]) from the install in `dir`.
pub async fn serve(dir: &Path, path: &str) -> UiResponse {
    let Some(rest) = path.strip_prefix(PREFIX) else { return UiResponse::NotFound };
    let rest = match rest {
        "" => return UiResponse::Redirect("/admin/"),
        "/" | "/index.html" => return index(dir).await,
        rest => rest.trim_start_matches('/'),
    };
    let Some((file, content_type)) = resolve(rest) else { return UiResponse::NotFound };
    match tokio::fs::read(dir.join(&file)).await {
        Ok(body) => UiResponse::File { body: body.into(), content_type },
        Err(err) => {
            tracing::debug!(file = %file.display(), error = %err, "admin UI file not found");
            UiResponse::NotFound
        }
    }
}

async fn index(dir: &Path) -> UiResponse {
    let file = dir.join(DIST).join("index.html");
    match tokio::fs::read_to_string(&file).await {
        Ok(html) => UiResponse::File { body: rewrite_index(&html).into(), content_type: "text/html; charset=utf-8" },
        Err(err) => {
            tracing::warn!(file = %file.display(), error = %err, "cannot read the admin UI (run `npm ci` in admin/?)");
            UiResponse::NotFound
        }
    }
}

/// The package's page with local fonts.
pub fn rewrite_index(html: &str) -> String {
    let roboto: String = ["100", "300", "400", "500", "700", "900"]
        .iter()
        .map(|w| format!(r#"<link rel="stylesheet" href="fonts/roboto/latin-{w}.css">"#))
        .collect();
    if !html.contains(ROBOTO_CDN) || !html.contains(MDI_CDN) {
        tracing::warn!("the admin UI's index.html has other CDN links than expected: its fonts may not load offline");
    }
    html.replacen(ROBOTO_CDN, &roboto, 1).replacen(MDI_CDN, MDI_LOCAL, 1)
}

/// The file below the install for a path below `/admin/`, and its content type: the fonts'
/// CSS and files under `fonts/roboto/` and `fonts/mdi/`, the rest from the UI's `dist`.
/// Only plain names (letters, digits, `.`, `-`, `_`; none starting with a dot) with a known
/// extension: nothing outside these three directories can be named.
fn resolve(rest: &str) -> Option<(PathBuf, &'static str)> {
    let segments: Vec<&str> = rest.split('/').collect();
    let plain = |s: &&str| {
        !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if segments.len() > 4 || !segments.iter().all(plain) {
        return None;
    }
    let content_type = content_type(segments.last()?)?;
    let (base, inner) = match segments.as_slice() {
        ["fonts", "roboto", inner @ ..] => (ROBOTO, inner),
        ["fonts", "mdi", inner @ ..] => (MDI, inner),
        inner => (DIST, inner),
    };
    if inner.is_empty() {
        return None;
    }
    Some((inner.iter().fold(PathBuf::from(base), |path, s| path.join(s)), content_type))
}

fn content_type(name: &str) -> Option<&'static str> {
    let types = [
        (".js", "text/javascript; charset=utf-8"),
        (".css", "text/css; charset=utf-8"),
        (".html", "text/html; charset=utf-8"),
        (".svg", "image/svg+xml"),
        (".png", "image/png"),
        (".woff2", "font/woff2"),
        (".woff", "font/woff"),
        (".ttf", "font/ttf"),
        (".eot", "application/vnd.ms-fontobject"),
        (".map", "application/json"),
    ];
    types.iter().find(|(ext, _)| name.ends_with(ext)).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_three_directories() {
        let ok =
            |rest: &str, file: &str| assert_eq!(resolve(rest).map(|(p, _)| p), Some(PathBuf::from(file)), "{rest}");
        ok("js/app.0d7d7845.js", "node_modules/@socket.io/admin-ui/ui/dist/js/app.0d7d7845.js");
        ok("favicon.png", "node_modules/@socket.io/admin-ui/ui/dist/favicon.png");
        ok(
            "fonts/roboto/files/roboto-latin-400-normal.woff2",
            "node_modules/@fontsource/roboto/files/roboto-latin-400-normal.woff2",
        );
        ok(
            "fonts/mdi/fonts/materialdesignicons-webfont.woff2",
            "node_modules/@mdi/font/fonts/materialdesignicons-webfont.woff2",
        );
        for bad in [
            "../secret.js",
            "js/../../x.js",
            ".hidden.js",
            "js//a.js",
            "a/b/c/d/e.js",
            "index.toml",
            "fonts/mdi",
            "",
            "js/a b.js",
            "fonts/roboto/%2e%2e.css",
        ] {
            assert_eq!(resolve(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let page = format!("<head>{ROBOTO_CDN}{MDI_CDN}<link href=\"css/app.css\"></head>");
        let out = rewrite_index(&page);
        assert!(!out.contains("https://"), "{out}");
        assert!(out.contains("fonts/roboto/latin-400.css") && out.contains(MDI_LOCAL));
    }
}
