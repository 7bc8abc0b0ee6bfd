//! The OpenAPI document as a contract a client can trust. Request bodies are the JSON Schemas in
//! `schemas/` that the gateway validates against — embedded in the document as components, not
//! described beside it — and every operation lists every status code it can answer, each error
//! with the one JSON error body ([`ErrorBody`]).
//!
//! Handlers name a body's schema with a marker type (`request_body(content = payload::Search)`);
//! utoipa renders a `$ref` to the component, and [`document`] replaces the component with the
//! schema file itself. The error responses every route shares — the middleware's and the
//! extractors' (401, 408, 413, 415, 503, …) — are added here once rather than in each annotation.

use serde_json::{json, Map, Value};

use crate::foundation::schema::PAYLOADS;

/// Marker types naming each request body's schema in `#[utoipa::path]` annotations. Each renders
/// as a reference to the component of the same name, which [`document`] fills from `schemas/`.
pub mod payload {
    use std::borrow::Cow;

    use utoipa::openapi::{ObjectBuilder, RefOr, Schema};

    macro_rules! payloads {
        ($($ty:ident),* $(,)?) => {$(
            pub struct $ty;

            impl utoipa::PartialSchema for $ty {
                fn schema() -> RefOr<Schema> {
                    // Replaced by the schema file in `contract::document`.
                    ObjectBuilder::new().into()
                }
            }

            impl utoipa::ToSchema for $ty {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($ty))
                }
            }
        )*};
    }

    payloads!(
        Search,
        Consent,
        ConsentWithdrawal,
        BreakGlass,
        BreakGlassReview,
        Explain,
        Concern,
        ConcernUpdate,
        ConcernAddendum,
        Event,
        Subscription,
        MatchDecision,
    );
}

/// Response bodies described by a schema file rather than by their Rust type, by component name:
/// a report whose shape depends on the reader's policy is described where its columns are.
pub const RESPONSES: &[(&str, &str)] = &[
    ("AreaReport", crate::read::area::SCHEMA),
    ("QualityReport", crate::read::quality::SCHEMA),
];

/// The one body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What kind of refusal: `bad_request`, `unprocessable`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `timeout`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `audit_unavailable`, `unavailable`, `internal`.
    pub error: String,
    /// What to fix, in words.
    pub message: Option<String>,
    /// For an invalid body: every problem, each with its JSON pointer.
    pub errors: Option<Vec<crate::foundation::schema::SchemaError>>,
}

/// The status codes any route can answer, beside its own, with why.
const EVERY_ROUTE: &[(&str, &str)] = &[
    (
        "408",
        "The request took longer than `limits.request_timeout_ms`, or its body arrived too slowly",
    ),
    (
        "500",
        "Internal error (a bug); nothing was changed and nothing was shown",
    ),
    (
        "503",
        "Overloaded (more than `limits.max_in_flight` requests), or the audit log cannot be \
         written: no data is returned and nothing is changed",
    ),
];

/// The rendered document: utoipa's, with the payload schemas embedded and the shared error
/// responses added.
pub fn document(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, text) in PAYLOADS.iter().chain(RESPONSES) {
            for (component, schema) in component_schemas(name, text) {
                schemas.insert(component, schema);
            }
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operations in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in operations.values_mut().filter_map(Value::as_object_mut) {
                unexploded_query(op);
                add_error_responses(op);
            }
        }
    }
    doc
}

/// A schema file as components: the schema under `name`, each of its `$defs` beside it as
/// `{name}_{def}`, with references rewritten to match, and without `$schema` and `$id` (the
/// document is the resource now; OpenAPI 3.1 speaks the same JSON Schema dialect).
pub fn component_schemas(name: &str, text: &str) -> Vec<(String, Value)> {
    let Ok(Value::Object(mut schema)) = serde_json::from_str::<Value>(text) else {
        // The schemas are compiled by `Schemas::load`, whose tests would fail first.
        return Vec::new();
    };
    schema.remove("$schema");
    schema.remove("$id");
    let defs = schema.remove("$defs");
    let mut out = vec![(name.to_string(), Value::Object(schema))];
    if let Some(Value::Object(defs)) = defs {
        out.extend(
            defs.into_iter()
                .map(|(def, v)| (format!("{name}_{def}"), v)),
        );
    }
    for (_, v) in &mut out {
        rewrite_refs(v, name);
    }
    out
}

fn rewrite_refs(v: &mut Value, name: &str) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(def) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{name}_{def}");
                }
            }
            map.values_mut().for_each(|v| rewrite_refs(v, name));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, name)),
        _ => {}
    }
}

/// Query parameters are sent `explode: false`: for the single values every one of ours takes
/// it is the same on the wire as the default, and it stops a client library from turning an
/// empty list into no parameter at all (schemathesis's negative tests did, then counted the
/// request's success against the API).
fn unexploded_query(op: &mut Map<String, Value>) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params.iter_mut().filter_map(Value::as_object_mut) {
        let scalar = !p
            .get("schema")
            .and_then(|s| s.get("type"))
            .is_some_and(|t| t == "array");
        if p.get("in").and_then(Value::as_str) == Some("query") && scalar {
            p.insert("explode".into(), Value::Bool(false));
        }
    }
}

fn add_error_responses(op: &mut Map<String, Value>) {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let has_body = op.contains_key("requestBody");
    let has_params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let mut add: Vec<(&str, &str)> = EVERY_ROUTE.to_vec();
    if secured {
        add.push(("401", "Missing, invalid or expired token"));
    }
    if has_body || has_params {
        add.push((
            "400",
            "Invalid request: a parameter or the body does not match this document",
        ));
    }
    if has_body {
        add.push((
            "422",
            "The body matches its schema but cannot be acted on (an identifier whose check \
             digit fails, a child or agency that does not exist, a period that ends before it \
             starts); every problem with its JSON pointer; nothing changed",
        ));
        add.push(("413", "Body larger than `limits.body_bytes`"));
        add.push(("415", "Body not sent as `application/json`"));
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else { return };
    for (code, why) in add {
        responses
            .entry(code)
            .or_insert_with(|| json!({"description": why}));
    }
    for (code, response) in responses.iter_mut() {
        let is_error = code.starts_with('4') || code.starts_with('5');
        let Some(response) = response.as_object_mut() else {
            continue;
        };
        if is_error && !response.contains_key("content") {
            response.insert(
                "content".into(),
                json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}),
            );
        }
        if response
            .get("description")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            response.insert("description".into(), Value::String(describe(code).into()));
        }
    }
}

/// A description for a status an annotation listed without one.
fn describe(code: &str) -> &'static str {
    match code {
        "400" => "Invalid request; every problem with its JSON pointer",
        "401" => "Missing, invalid or expired token",
        "403" => "Not allowed for this role or relationship",
        "404" => "Not found",
        "409" => "Conflicts with what is stored",
        _ => "See the operation's description",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        crate::http::openapi().clone()
    }

    /// The contract a client reads is the schema the gateway checks: each payload schema is in
    /// the document exactly as in its file (less `$schema`, `$id`, and `$defs` moved beside it).
    #[test]
    fn payload_schemas_are_embedded_as_their_files() {
        let doc = doc();
        for (name, text) in PAYLOADS {
            let file: Value = serde_json::from_str(text).expect("schema file is JSON");
            let embedded = &doc["components"]["schemas"][*name];
            for (key, value) in file.as_object().expect("schema object") {
                match key.as_str() {
                    "$schema" | "$id" => assert!(embedded.get(key).is_none(), "{name}.{key}"),
                    "$defs" => {
                        for (def, v) in value.as_object().expect("defs") {
                            let mut want = v.clone();
                            rewrite_refs(&mut want, name);
                            assert_eq!(
                                doc["components"]["schemas"][format!("{name}_{def}")],
                                want,
                                "{name} $defs/{def}"
                            );
                        }
                    }
                    _ => {
                        let mut want = value.clone();
                        rewrite_refs(&mut want, name);
                        assert_eq!(embedded[key], want, "{name}.{key}");
                    }
                }
            }
        }
        let text = serde_json::to_string(&doc).expect("serialises");
        assert!(!text.contains("#/$defs/"), "a reference left unrewritten");
    }

    /// A parameter is where the document says: `in: path` only for a name in the path template
    /// (a query struct's parameters once came out as path parameters).
    #[test]
    fn parameters_are_where_the_document_says() {
        let doc = doc();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().expect("name");
                    let in_template = path.contains(&format!("{{{name}}}"));
                    assert_eq!(
                        p["in"] == "path",
                        in_template,
                        "{method} {path}: parameter {name} is in {}",
                        p["in"]
                    );
                }
            }
        }
    }

    /// Every POST that takes a body names one of the payload schemas, and every payload schema
    /// is some operation's body.
    #[test]
    fn request_bodies_reference_the_schemas() {
        let doc = doc();
        let mut used = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let Some(body) = op.get("requestBody") else {
                    continue;
                };
                let r = body["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}: body without a schema: {body}"));
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(
                    PAYLOADS.iter().any(|(n, _)| *n == name),
                    "{method} {path}: {name} is not a schema from schemas/"
                );
                used.insert(name.to_string());
            }
        }
        for (name, _) in PAYLOADS {
            assert!(used.contains(*name), "{name} is no operation's body");
        }
    }

    /// Every error response has the one JSON error body, and the codes the middleware can answer
    /// on any route are listed on every route.
    #[test]
    fn every_error_response_is_documented_with_the_error_body() {
        let doc = doc();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let responses = op["responses"].as_object().expect("responses");
                for code in ["408", "500", "503"] {
                    assert!(responses.contains_key(code), "{method} {path}: {code}");
                }
                if op.get("security").is_some() {
                    assert!(responses.contains_key("401"), "{method} {path}: 401");
                }
                if op.get("requestBody").is_some() {
                    for code in ["400", "413", "415"] {
                        assert!(responses.contains_key(code), "{method} {path}: {code}");
                    }
                }
                for (code, r) in responses {
                    if code.starts_with('4') || (code.starts_with('5') && path != "/readyz") {
                        assert_eq!(
                            r["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {code}"
                        );
                    }
                }
            }
        }
    }
}
