//! JSON Schemas of everything that comes in, compiled once. The schema files live under
//! `schemas/` in the repository and are embedded in the binary so a deployment cannot run with
//! schemas that differ from the code that reads the payloads.

use jsonschema::Validator;
use serde_json::Value;

/// One schema violation: where (a JSON pointer into the payload) and what.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SchemaError {
    /// JSON pointer to the offending value (`""` is the whole document).
    pub pointer: String,
    pub message: String,
}

impl SchemaError {
    /// The pointer as a configuration key: `/sources/0/deadline_ms` → `sources[0].deadline_ms`.
    pub fn key(&self) -> String {
        let mut key = String::new();
        for part in self.pointer.split('/').skip(1) {
            if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
                key.push_str(&format!("[{part}]"));
            } else {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&part.replace("~1", "/").replace("~0", "~"));
            }
        }
        if key.is_empty() {
            "(root)".into()
        } else {
            key
        }
    }
}

/// The compiled schemas.
pub struct Schemas {
    config: Validator,
    search: Validator,
    match_decision: Validator,
}

const CONFIG: &str = include_str!("../../schemas/config.schema.json");
const SEARCH: &str = include_str!("../../schemas/search.schema.json");
const MATCH_DECISION: &str = include_str!("../../schemas/match-decision.schema.json");

impl Schemas {
    /// Compiles the embedded schemas. They are part of the build, so a failure here is a bug,
    /// caught by the unit tests below rather than at a user's start-up.
    pub fn load() -> anyhow::Result<Self> {
        let compile = |name: &str, text: &str| -> anyhow::Result<Validator> {
            let schema: Value = serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("schema {name} is not JSON: {e}"))?;
            jsonschema::validator_for(&schema)
                .map_err(|e| anyhow::anyhow!("schema {name} does not compile: {e}"))
        };
        Ok(Self {
            config: compile("config", CONFIG)?,
            search: compile("search", SEARCH)?,
            match_decision: compile("match-decision", MATCH_DECISION)?,
        })
    }

    pub fn config_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.config, v)
    }

    pub fn search_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.search, v)
    }

    pub fn match_decision_errors(&self, v: &Value) -> Vec<SchemaError> {
        errors(&self.match_decision, v)
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
    fn pointer_to_key() {
        let e = SchemaError {
            pointer: "/sources/0/adapter/kind".into(),
            message: String::new(),
        };
        assert_eq!(e.key(), "sources[0].adapter.kind");
    }
}
