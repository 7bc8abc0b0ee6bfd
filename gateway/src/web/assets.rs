//! The files pages load, compiled into the binary so that a deployment is one file and no page
//! ever loads anything from another origin: the GOV.UK Design System's and the MOJ components'
//! built CSS, JavaScript, fonts and images (vendored by `scripts/vendor-frontend`, served under
//! `/assets/`, where their stylesheets look for fonts and images), and Weft's own few (served
//! under `/static/`).

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{self, HeaderValue};
use http::StatusCode;
use include_dir::{include_dir, Dir};

use crate::gateway::Gateway;

static VENDORED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/assets");
static OURS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/src/web/static");

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/assets/{*path}", get(vendored))
        .route("/static/{*path}", get(ours))
        .route("/favicon.ico", get(favicon))
}

async fn vendored(Path(path): Path<String>) -> Response {
    serve(&VENDORED, &path)
}

async fn ours(Path(path): Path<String>) -> Response {
    serve(&OURS, &path)
}

async fn favicon() -> Response {
    serve(&VENDORED, "images/favicon.ico")
}

fn serve(dir: &'static Dir<'static>, path: &str) -> Response {
    let Some(file) = dir.get_file(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = file.contents().into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime(path)));
    // An hour: the files change only with a new build, and their names do not (the fonts' do).
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "json" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_systems_files_are_compiled_in() {
        for f in [
            "govuk-frontend.min.css",
            "govuk-frontend.min.js",
            "moj-frontend.min.css",
            "moj-frontend.min.js",
            "images/favicon.ico",
        ] {
            assert!(VENDORED.get_file(f).is_some(), "{f}");
        }
        // Every font and image the stylesheets ask for is there.
        for css in ["govuk-frontend.min.css", "moj-frontend.min.css"] {
            let text = VENDORED
                .get_file(css)
                .and_then(|f| f.contents_utf8())
                .unwrap();
            for url in text.split("url(").skip(1) {
                let url = url.split(')').next().unwrap().trim_matches(['"', '\'']);
                if let Some(path) = url.strip_prefix("/assets/") {
                    assert!(VENDORED.get_file(path).is_some(), "{css} asks for {url}");
                }
            }
        }
        assert!(OURS.get_file("weft.js").is_some());
        assert!(OURS.get_file("weft-body.js").is_some());
        assert!(OURS.get_file("weft.css").is_some());
    }
}
