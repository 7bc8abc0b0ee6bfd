//! Stage 4, authorise: for each item a source returned, may this practitioner see its category
//! for this purpose? The rules are casbin's model and policy under `policies/`.
//!
//! The question has a small, closed domain (roles × agency kinds × categories × purposes), so
//! when a policy loads, casbin is asked every question once and the answers are kept in a table.
//! A view then costs one lookup per category however many rules there are, and every answer is
//! exactly what casbin said, with the rule that decided it. A policy that cannot be loaded is an
//! error at load time, never a permissive answer at request time.

use std::collections::HashMap;
use std::path::Path;

use casbin::{CoreApi, DefaultModel, Enforcer, FileAdapter, MgmtApi};
use serde::Serialize;

use weft_adapters::Item;

use crate::config::AgencyKind;
use crate::domain::{Purpose, Role, CATEGORIES};
use crate::fanout::{Fetched, Outcome};

/// The rule id reported when no rule matched.
pub const NO_RULE: &str = "default-deny";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Permit,
    PermitWithConsent,
    Deny,
}

/// One answer, with the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub effect: Effect,
    /// The id of the deciding rule, or `default-deny`.
    pub rule: String,
    /// Lawful basis codes of the deciding rule (e.g. `6e`, `s18`); empty for a denial.
    pub basis: Vec<String>,
}

impl Decision {
    fn default_deny() -> Self {
        Decision {
            effect: Effect::Deny,
            rule: NO_RULE.into(),
            basis: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot load policy: {0}")]
    Load(String),
    #[error("policy rule {0} is malformed: {1}")]
    Rule(String, String),
}

/// A loaded, precomputed policy. Replaced whole when the policy changes.
pub struct Policy {
    table: HashMap<(Role, AgencyKind, usize, Purpose), Decision>,
    rules: usize,
}

impl Policy {
    /// Loads the casbin model and policy and asks casbin every question in the domain.
    pub async fn load(model: &Path, policy: &Path) -> Result<Policy, PolicyError> {
        let load = |e: casbin::Error| PolicyError::Load(e.to_string());
        let model_text = std::fs::read_to_string(model)
            .map_err(|e| PolicyError::Load(format!("{}: {e}", model.display())))?;
        if !policy.exists() {
            return Err(PolicyError::Load(format!(
                "{} does not exist",
                policy.display()
            )));
        }
        let model = DefaultModel::from_str(&model_text).await.map_err(load)?;
        let adapter = FileAdapter::new(policy.to_path_buf());
        let mut enforcer = Enforcer::new(model, adapter).await.map_err(load)?;
        enforcer.enable_log(false);
        let rules = enforcer.get_policy();
        for r in &rules {
            if r.len() != 8 {
                return Err(PolicyError::Rule(
                    r.first().cloned().unwrap_or_default(),
                    format!("expected 8 fields after `p`, found {}", r.len()),
                ));
            }
            if !matches!(r[4].as_str(), "allow" | "deny")
                || !matches!(r[5].as_str(), "-" | "consent")
            {
                return Err(PolicyError::Rule(
                    r[6].clone(),
                    "effect must be allow or deny, condition - or consent".into(),
                ));
            }
        }

        let mut table = HashMap::new();
        for &role in Role::ALL {
            for kind in AgencyKind::ALL {
                for (ci, cat) in CATEGORIES.iter().enumerate() {
                    for &purpose in Purpose::ALL {
                        let (allowed, explain) = enforcer
                            .enforce_ex((role.as_str(), kind.as_str(), *cat, purpose.as_str()))
                            .map_err(load)?;
                        table.insert((role, kind, ci, purpose), decision(allowed, &explain));
                    }
                }
            }
        }
        Ok(Policy {
            table,
            rules: rules.len(),
        })
    }

    /// The decision for one category. Categories outside the known list are denied.
    pub fn decide(
        &self,
        role: Role,
        kind: AgencyKind,
        category: &str,
        purpose: Purpose,
    ) -> Decision {
        CATEGORIES
            .iter()
            .position(|c| *c == category)
            .and_then(|ci| self.table.get(&(role, kind, ci, purpose)))
            .cloned()
            .unwrap_or_else(Decision::default_deny)
    }

    /// How many `p` rules the policy holds.
    pub fn rules(&self) -> usize {
        self.rules
    }
}

/// Turns casbin's answer and its explanation (the matched rule) into a decision.
fn decision(allowed: bool, explain: &[Vec<String>]) -> Decision {
    let Some(rule) = explain.first() else {
        return Decision::default_deny();
    };
    let id = rule.get(6).cloned().unwrap_or_else(|| NO_RULE.to_string());
    if !allowed {
        return Decision {
            effect: Effect::Deny,
            rule: id,
            basis: Vec::new(),
        };
    }
    let consent = rule.get(5).is_some_and(|c| c == "consent");
    Decision {
        effect: if consent {
            Effect::PermitWithConsent
        } else {
            Effect::Permit
        },
        rule: id,
        basis: rule
            .get(7)
            .map(|b| {
                b.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && *s != "-")
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// One source's answer after policy: what may be shown, and what is withheld and why.
pub enum Judged {
    Shown {
        /// Permitted items of each record, by local id.
        records: Vec<(String, Vec<Item>)>,
        /// Every category the source returned, with its decision.
        categories: Vec<CategoryDecision>,
    },
    NoRecord,
    Unavailable(String),
}

/// The decision on one category from one source.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CategoryDecision {
    pub category: String,
    /// `shown` or `withheld`.
    pub status: &'static str,
    pub rule: String,
    /// Why it was withheld: `no_policy` or `consent_required`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip)]
    pub basis: Vec<String>,
}

/// Applies the policy to what the sources returned. Withheld items are dropped here, before
/// merging, so no later stage can leak them.
pub fn judge(
    policy: &Policy,
    role: Role,
    kind: AgencyKind,
    purpose: Purpose,
    fetched: Vec<Fetched>,
) -> Vec<(Fetched, Judged)> {
    fetched
        .into_iter()
        .map(|mut f| {
            let outcome = std::mem::replace(&mut f.outcome, Outcome::NoRecord);
            let judged = match outcome {
                Outcome::NoRecord => Judged::NoRecord,
                Outcome::Unavailable(reason) => Judged::Unavailable(reason),
                Outcome::Records(records) => {
                    let mut categories: Vec<CategoryDecision> = Vec::new();
                    let records = records
                        .into_iter()
                        .map(|(id, items)| {
                            let kept = items
                                .into_iter()
                                .filter(|item| {
                                    let shown = match categories
                                        .iter()
                                        .find(|c| c.category == item.category)
                                    {
                                        Some(c) => c.status == "shown",
                                        None => {
                                            let d =
                                                policy.decide(role, kind, &item.category, purpose);
                                            let c = category_decision(&item.category, d);
                                            let shown = c.status == "shown";
                                            categories.push(c);
                                            shown
                                        }
                                    };
                                    shown
                                })
                                .collect();
                            (id, kept)
                        })
                        .collect();
                    for c in &categories {
                        crate::metrics::DECISIONS
                            .with_label_values(&[c.status])
                            .inc();
                    }
                    Judged::Shown {
                        records,
                        categories,
                    }
                }
            };
            (f, judged)
        })
        .collect()
}

fn category_decision(category: &str, d: Decision) -> CategoryDecision {
    let (status, reason) = match d.effect {
        Effect::Permit => ("shown", None),
        // No consent register is consulted yet, so consent-based sharing fails closed.
        Effect::PermitWithConsent => ("withheld", Some("consent_required")),
        Effect::Deny => ("withheld", Some("no_policy")),
    };
    CategoryDecision {
        category: category.to_string(),
        status,
        rule: d.rule,
        reason,
        basis: if status == "shown" {
            d.basis
        } else {
            Vec::new()
        },
    }
}

/// The words behind a lawful-basis code, for the view and the audit entry.
pub fn basis_text(code: &str) -> &'static str {
    match code {
        "6a" => "UK GDPR Art. 6(1)(a) consent",
        "6c" => "UK GDPR Art. 6(1)(c) legal obligation",
        "6d" => "UK GDPR Art. 6(1)(d) vital interests",
        "6e" => "UK GDPR Art. 6(1)(e) public task",
        "s18" => "UK GDPR Art. 9(2)(g); DPA 2018 Sch. 1 para 18, safeguarding of children",
        "9h" => "UK GDPR Art. 9(2)(h) health or social care",
        _ => "unrecognised basis code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
    }

    async fn default_policy() -> Policy {
        Policy::load(&repo("policies/model.conf"), &repo("policies/policy.csv"))
            .await
            .expect("default policy loads")
    }

    #[tokio::test]
    async fn teachers_never_see_sensitive_health() {
        let p = default_policy().await;
        for &purpose in Purpose::ALL {
            for role in [Role::Teacher, Role::Dsl] {
                let d = p.decide(role, AgencyKind::Education, "health.sensitive", purpose);
                assert_eq!(d.effect, Effect::Deny);
                assert_eq!(d.rule, "NEVER-EDU-HEALTH-SENSITIVE");
            }
        }
    }

    #[tokio::test]
    async fn social_worker_safeguarding_sees_school_status_with_basis() {
        let p = default_policy().await;
        let d = p.decide(
            Role::SocialWorker,
            AgencyKind::SocialCare,
            "education.attendance",
            Purpose::Safeguarding,
        );
        assert_eq!(d.effect, Effect::Permit);
        assert_eq!(d.rule, "SW-SG-EDUCATION");
        assert_eq!(d.basis, vec!["6e", "s18"]);
    }

    #[tokio::test]
    async fn dsl_inherits_teacher_and_early_help_needs_consent() {
        let p = default_policy().await;
        let d = p.decide(
            Role::Dsl,
            AgencyKind::Education,
            "education.attendance",
            Purpose::Safeguarding,
        );
        assert_eq!(d.rule, "TCH-SG-EDUCATION");
        let d = p.decide(
            Role::SocialWorker,
            AgencyKind::SocialCare,
            "education.attendance",
            Purpose::EarlyHelp,
        );
        assert_eq!(d.effect, Effect::PermitWithConsent);
    }

    #[tokio::test]
    async fn no_rule_and_unknown_category_deny() {
        let p = default_policy().await;
        let d = p.decide(
            Role::DataAdmin,
            AgencyKind::SocialCare,
            "identity.core",
            Purpose::Safeguarding,
        );
        assert_eq!(d, Decision::default_deny());
        let d = p.decide(
            Role::SocialWorker,
            AgencyKind::SocialCare,
            "made.up",
            Purpose::Safeguarding,
        );
        assert_eq!(d, Decision::default_deny());
    }

    #[tokio::test]
    async fn broken_policy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("policy.csv");
        std::fs::write(
            &bad,
            "p, teacher, education, identity.core, safeguarding, maybe, -, X, 6e\n",
        )
        .unwrap();
        assert!(Policy::load(&repo("policies/model.conf"), &bad)
            .await
            .is_err());
        assert!(Policy::load(
            &repo("policies/model.conf"),
            &dir.path().join("missing.csv")
        )
        .await
        .is_err());
    }
}
