//! JSON Schemas of everything that comes in, compiled once. The schema files live under
//! `schemas/` in the repository and are embedded in the binary so a deployment cannot run with
//! schemas that differ from the code that reads the payloads.

use jsonschema::Validator;
use serde_json::Value;

use super::error::Error;
pub use super::error::SchemaError;

/// The compiled schemas.
pub struct Schemas {
    config: Validator,
    search: Validator,
    consent: Validator,
    break_glass: Validator,
    break_glass_review: Validator,
    consent_withdrawal: Validator,
    explain: Validator,
    concern: Validator,
    concern_update: Validator,
    concern_addendum: Validator,
    event: Validator,
    subscription: Validator,
    match_decision: Validator,
}

const CONFIG: &str = include_str!("../../../schemas/config.schema.json");
const SEARCH: &str = include_str!("../../../schemas/search.schema.json");
const CONSENT: &str = include_str!("../../../schemas/consent.schema.json");
const BREAK_GLASS: &str = include_str!("../../../schemas/break-glass.schema.json");
const BREAK_GLASS_REVIEW: &str = include_str!("../../../schemas/break-glass-review.schema.json");
const CONSENT_WITHDRAWAL: &str = include_str!("../../../schemas/consent-withdrawal.schema.json");
const EXPLAIN: &str = include_str!("../../../schemas/explain.schema.json");
const CONCERN: &str = include_str!("../../../schemas/concern.schema.json");
const CONCERN_UPDATE: &str = include_str!("../../../schemas/concern-update.schema.json");
const CONCERN_ADDENDUM: &str = include_str!("../../../schemas/concern-addendum.schema.json");
const EVENT: &str = include_str!("../../../schemas/event.schema.json");
const SUBSCRIPTION: &str = include_str!("../../../schemas/subscription.schema.json");
const MATCH_DECISION: &str = include_str!("../../../schemas/match-decision.schema.json");

/// Every request body the API takes, by the name the OpenAPI document gives its schema, with the
/// schema's text: the document embeds these, so the contract a client reads is the one the
/// gateway checks (`http::contract`).
pub const PAYLOADS: &[(&str, &str)] = &[
    ("Search", SEARCH),
    ("Consent", CONSENT),
    ("ConsentWithdrawal", CONSENT_WITHDRAWAL),
    ("BreakGlass", BREAK_GLASS),
    ("BreakGlassReview", BREAK_GLASS_REVIEW),
    ("Explain", EXPLAIN),
    ("Concern", CONCERN),
    ("ConcernUpdate", CONCERN_UPDATE),
    ("ConcernAddendum", CONCERN_ADDENDUM),
    ("Event", EVENT),
    ("Subscription", SUBSCRIPTION),
    ("MatchDecision", MATCH_DECISION),
];

impl Schemas {
    /// Compiles the embedded schemas. They are part of the build, so a failure here is a bug,
    /// caught by the unit tests below rather than at a user's start-up.
    pub fn load() -> anyhow::Result<Self> {
        let compile = |name: &str, text: &str| -> anyhow::Result<Validator> {
            let schema: Value = serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("schema {name} is not JSON: {e}"))?;
            // `format` is checked too (a `date` must be a real date): the OpenAPI document
            // embeds these schemas, and its clients take `format` at its word.
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| anyhow::anyhow!("schema {name} does not compile: {e}"))
        };
        Ok(Self {
            config: compile("config", CONFIG)?,
            search: compile("search", SEARCH)?,
            consent: compile("consent", CONSENT)?,
            break_glass: compile("break-glass", BREAK_GLASS)?,
            break_glass_review: compile("break-glass-review", BREAK_GLASS_REVIEW)?,
            consent_withdrawal: compile("consent-withdrawal", CONSENT_WITHDRAWAL)?,
            explain: compile("explain", EXPLAIN)?,
            concern: compile("concern", CONCERN)?,
            concern_update: compile("concern-update", CONCERN_UPDATE)?,
            concern_addendum: compile("concern-addendum", CONCERN_ADDENDUM)?,
            event: compile("event", EVENT)?,
            subscription: compile("subscription", SUBSCRIPTION)?,
            match_decision: compile("match-decision", MATCH_DECISION)?,
        })
    }

    pub fn config_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.config, v)
    }

    pub fn search_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.search, v)
    }

    pub fn consent_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.consent, v)
    }

    pub fn break_glass_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.break_glass, v)
    }

    pub fn break_glass_review_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.break_glass_review, v)
    }

    pub fn consent_withdrawal_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.consent_withdrawal, v)
    }

    pub fn explain_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.explain, v)
    }

    pub fn concern_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.concern, v)
    }

    pub fn concern_update_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.concern_update, v)
    }

    pub fn concern_addendum_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.concern_addendum, v)
    }

    pub fn event_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.event, v)
    }

    pub fn subscription_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.subscription, v)
    }

    pub fn match_decision_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.match_decision, v)
    }
}

/// A schema-valid JSON payload, or [`Error::Invalid`] listing every problem with its pointer.
/// `what` names the payload in the message ("the concern").
pub fn validated(
    body: &[u8],
    check: impl Fn(&Value) -> Vec<SchemaError>,
    what: &str,
) -> Result<Value, Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("body is not valid JSON: {e}")))?;
    let errors = check(&value);
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(Error::Invalid {
            message: format!("{} problem(s) in the {what}", errors.len()),
            errors,
        })
    }
}

fn errors(validator: &Validator, v: &Value) -> Vec<SchemaError> {
    validator
        .iter_errors(v)
        .map(|e| SchemaError {
            pointer: e.instance_path.to_string(),
            message: e.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_compile() {
        Schemas::load().expect("embedded schemas compile");
    }

    #[test]
    fn search_errors_name_the_field() {
        let s = Schemas::load().unwrap();
        let errs = s.search_errors(&json!({"purpose": "safeguarding", "nhs_number": 12}));
        assert!(errs.iter().any(|e| e.pointer == "/nhs_number"), "{errs:?}");
        let errs = s.search_errors(&json!({"nhs_number": "9000000009"}));
        assert!(
            errs.iter().any(|e| e.message.contains("purpose")),
            "{errs:?}"
        );
    }

    #[test]
    fn concern_errors_name_every_field() {
        let s = Schemas::load().unwrap();
        let errs = s.concern_errors(&json!({
            "child": {"nhs_number": 12},
            "category": "gossip",
            "urgency": "routine",
            "observed": {"what": "", "when": "yesterday"},
            "reporter": {"name": "A"}
        }));
        for p in [
            "/child/nhs_number",
            "/category",
            "/observed/what",
            "/observed/when",
            "/reporter",
        ] {
            assert!(errs.iter().any(|e| e.pointer == p), "{p} in {errs:?}");
        }
    }

    #[test]
    fn event_kinds_require_their_section() {
        let s = Schemas::load().unwrap();
        let errs = s.event_errors(&json!({
            "kind": "police_incident",
            "occurred_at": "2025-10-07T23:10:00Z",
            "child": {"nhs_number": "9000000009"}
        }));
        assert!(
            errs.iter().any(|e| e.message.contains("incident")),
            "{errs:?}"
        );
        let errs = s.event_errors(&json!({
            "kind": "attendance",
            "occurred_at": "2025-10-07T23:10:00Z",
            "child": {"nhs_number": "9000000009"},
            "attendance": {"from": "2025-10-07", "to": "2025-10-07", "possible_sessions": -1, "attended_sessions": 0}
        }));
        assert!(
            errs.iter()
                .any(|e| e.pointer == "/attendance/possible_sessions"),
            "{errs:?}"
        );
    }

    #[test]
    fn pointer_to_key() {
        let e = SchemaError {
            pointer: "/sources/0/adapter/kind".into(),
            message: String::new(),
        };
        assert_eq!(e.key(), "sources[0].adapter.kind");
    }
}
