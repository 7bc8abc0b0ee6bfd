//! Seeing the policy: the decision the gateway would make for a role, agency, category and
//! purpose, with the rule and the lawful basis in words. `weft policy explain` and `weft policy
//! check` ask the same questions from the command line.

use serde::Serialize;
use serde_json::{json, Value};

use crate::foundation::config::{AgencyKind, Config};
use crate::foundation::domain::{Purpose, Role};
use crate::foundation::error::Error;
use crate::foundation::schema::Schemas;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::{basis_text, Decision, Effect, Question};

/// A decision as explained to a person: the effect, the rule and the lawful basis in words.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub role: Role,
    pub agency: String,
    pub agency_kind: AgencyKind,
    pub category: String,
    pub purpose: Purpose,
    pub effect: Effect,
    pub rule: String,
    pub breakable: bool,
    pub lawful_basis: Vec<Basis>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Basis {
    pub code: String,
    pub text: &'static str,
}

/// A question about the policy, checked.
pub struct Asked {
    pub role: Role,
    pub agency: String,
    pub kind: AgencyKind,
    pub category: String,
    pub purpose: Purpose,
}

impl Asked {
    /// The question in the policy's terms.
    pub fn question(&self) -> Question<'_> {
        Question {
            role: self.role,
            agency: &self.agency,
            kind: self.kind,
            category: &self.category,
            purpose: self.purpose,
        }
    }

    /// The decision, put for a person.
    pub fn answer(self, d: Decision) -> Answer {
        Answer {
            role: self.role,
            agency: self.agency,
            agency_kind: self.kind,
            category: self.category,
            purpose: self.purpose,
            effect: d.effect,
            rule: d.rule,
            breakable: d.breakable,
            lawful_basis: d
                .basis
                .into_iter()
                .map(|code| Basis {
                    text: basis_text(&code),
                    code,
                })
                .collect(),
        }
    }
}

/// A question as it arrives (API body or a line of a check file), validated by
/// `schemas/explain.schema.json` and resolved against the configured agencies.
pub fn question(schemas: &Schemas, config: &Config, v: &Value) -> Result<Asked, Error> {
    let errors = schemas.explain_errors(v);
    if !errors.is_empty() {
        return Err(Error::Invalid {
            message: format!("{} problem(s) in the question", errors.len()),
            errors,
        });
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let role: Role = text("role")
        .parse()
        .map_err(|e| Error::field("/role", format!("{e}")))?;
    let purpose: Purpose = text("purpose")
        .parse()
        .map_err(|e| Error::field("/purpose", format!("{e}")))?;
    let agency = text("agency").to_string();
    let kind = match (config.agency(&agency), v.get("agency_kind")) {
        (Some(a), _) => a.kind,
        (None, Some(k)) => serde_json::from_value(k.clone())
            .map_err(|e| Error::field("/agency_kind", e.to_string()))?,
        (None, None) => {
            return Err(Error::unprocessable(
                "/agency",
                "not a configured agency; name its agency_kind to ask about it",
            ))
        }
    };
    Ok(Asked {
        role,
        agency,
        kind,
        category: text("category").to_string(),
        purpose,
    })
}

/// Explains the decision the gateway would make now for the question in `body`.
pub async fn explain(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<Answer, Error> {
    const ACTION: &str = "policy_explain";
    let asked = serde_json::from_slice::<Value>(body)
        .map_err(|e| Error::invalid(format!("body is not valid JSON: {e}")))
        .and_then(|v| question(&gw.schemas, &gw.config, &v));
    let asked = match asked {
        Ok(q) => q,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let d = gw.policy().decide(&asked.question());
    let purpose = asked.purpose;
    let a = asked.answer(d);
    gw.record(
        who,
        ACTION,
        None,
        Some(purpose),
        "answered",
        json!({"rule": a.rule, "effect": a.effect}),
    )
    .await?;
    Ok(a)
}
