//! Stage 4, authorise: first, does the practitioner have a legitimate relationship with the
//! child at all ([`relate`])? Then, for each item a source returned, may they see it, for this
//! purpose? The policy (casbin, under `policies/`) decides per data category — including
//! whether the child is known to a source of each kind (`<kind>.known`), so a source the role
//! may not know of is never named; where it asks for consent, the consent register answers; a
//! break-glass grant can pass a breakable denial or a missing consent, never a `never_break`
//! line; a restriction from any source (NHS R/V, a refuge, a protected address) keeps the
//! child's address, telephone and GP back from every source for anyone the policy does not
//! name. Withheld items are dropped here, before merging, so no later stage can leak them.

pub mod consent;
pub mod grants;
pub mod policy;
pub mod relate;

use serde::Serialize;
use weft_adapters::Item;

pub use policy::{Decision, Effect, Policy, PolicyError, Question, Reference, NO_RULE};

use crate::foundation::config::AgencyKind;
use crate::foundation::domain::{Purpose, Role, CATEGORIES};
use crate::pipeline::fanout::{Fetched, Outcome};
use consent::{ConsentState, Consents};
use grants::Grant;
use policy::{RESTRICTED_CONTACT, RESTRICTED_FIELDS};

/// Who is asking and why, with what the register and any grant say about this child.
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub role: Role,
    pub agency: &'a str,
    pub kind: AgencyKind,
    pub purpose: Purpose,
    pub consents: &'a Consents,
    pub grant: Option<&'a Grant>,
}

impl Context<'_> {
    fn decide(&self, category: &str) -> Decision {
        self.policy.decide(&Question {
            role: self.role,
            agency: self.agency,
            kind: self.kind,
            category,
            purpose: self.purpose,
        })
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
    /// The role may not know whether this source holds the child: nothing of it is shown and
    /// it is not named. `held` is for the audit entry only.
    Hidden {
        held: bool,
        /// Whether the source was asked at all (see [`crate::pipeline::fanout::fan_out_to`]).
        asked: bool,
    },
}

/// The existence category of a source of this agency kind: whether the child is known to such a
/// source at all is data the agreement decides, like any other category.
pub fn known_category(kind: AgencyKind) -> &'static str {
    match kind {
        AgencyKind::Education => "education.known",
        AgencyKind::SocialCare => "social_care.known",
        AgencyKind::Health => "health.known",
        AgencyKind::Police => "police.known",
    }
}

/// Whether a view could show a viewer anything of a source of `source_kind`, decided before
/// the sources are asked: policy permits its existence category (`<kind>.known`) outright or
/// under consent (the register decides later), or denies it breakably and `grant` (for this
/// purpose) could pass the denial. A source of any other kind need not be asked.
pub fn may_know(
    policy: &Policy,
    role: Role,
    agency: &str,
    kind: AgencyKind,
    purpose: Purpose,
    source_kind: AgencyKind,
    grant: Option<&Grant>,
) -> bool {
    let d = policy.decide(&Question {
        role,
        agency,
        kind,
        category: known_category(source_kind),
        purpose,
    });
    d.effect != Effect::Deny || (d.breakable && grant.is_some_and(|g| g.purpose == purpose))
}

/// Whether a restriction would hold anything back from this viewer: policy does not name them
/// for `restricted.contact`. Only then need a source that can mark a child restricted be asked
/// when they may not know of it.
pub fn restriction_applies(
    policy: &Policy,
    role: Role,
    agency: &str,
    kind: AgencyKind,
    purpose: Purpose,
) -> bool {
    policy.effect(&Question {
        role,
        agency,
        kind,
        category: RESTRICTED_CONTACT,
        purpose,
    }) != Effect::Permit
}

/// Fields that mark a whole child as restricted when any source sets them true: NHS `R`/`V`, a
/// refuge, a protected address. The adapters read the same list into each record they hand the
/// index ([`weft_adapters::SourceRecord::restricted`]).
pub use weft_adapters::RESTRICTION_MARKERS;

fn is_marker(i: &Item) -> bool {
    weft_adapters::marks_restriction(i)
}

/// Every category this practitioner's policy could ever show for this purpose (with the grant
/// in force, if any), each decided: the view lists these whatever the sources hold, so its
/// shape says nothing of what exists.
pub fn listed_categories(ctx: &Context<'_>) -> Vec<CategoryDecision> {
    CATEGORIES
        .iter()
        .filter_map(|category| {
            let d = ctx.decide(category);
            let glass = ctx
                .grant
                .is_some_and(|g| g.purpose == ctx.purpose && d.breakable);
            (d.effect != Effect::Deny || glass).then(|| decided(ctx, category, d))
        })
        .collect()
}

/// The decision on one category from one source.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CategoryDecision {
    pub category: String,
    /// `shown` or `withheld`.
    pub status: &'static str,
    pub rule: String,
    /// Why it was withheld (`no_policy`, `consent_required`, `consent_withdrawn`,
    /// `consent_refused`), or `break_glass` when a grant released it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Fields of a restricted record held back (`restricted_record`), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
    /// The rule that governs restricted fields, when any were held back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redaction_rule: Option<String>,
    /// The break-glass grant that released this category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    #[serde(skip)]
    pub basis: Vec<String>,
}

impl CategoryDecision {
    pub fn shown(&self) -> bool {
        self.status == "shown"
    }
}

/// Applies policy, consent and any break-glass grant to what the sources returned.
pub fn judge(ctx: &Context<'_>, fetched: Vec<Fetched>) -> Vec<(Fetched, Judged)> {
    // A restriction from any source restricts the child, in every source.
    let restricted = fetched.iter().any(|f| match &f.outcome {
        Outcome::Records(r) => r.iter().any(|(_, items)| items.iter().any(is_marker)),
        _ => false,
    });
    let contact = restricted
        .then(|| ctx.decide(RESTRICTED_CONTACT))
        .filter(|d| d.effect != Effect::Permit);
    fetched
        .into_iter()
        .map(|mut f| {
            let outcome = std::mem::replace(&mut f.outcome, Outcome::NoRecord);
            let known = category_decision(ctx, known_category(f.source.agency.kind));
            if !known.shown() {
                let held = matches!(outcome, Outcome::Records(_));
                let asked = !matches!(outcome, Outcome::NotAsked);
                return (f, Judged::Hidden { held, asked });
            }
            let judged = match outcome {
                Outcome::NoRecord => Judged::NoRecord,
                // Not asked yet shown: the fan-out's choice and the judgement disagree. Say so
                // rather than read it as no record.
                Outcome::NotAsked => Judged::Unavailable("not_asked".into()),
                Outcome::Unavailable(reason) => Judged::Unavailable(reason),
                Outcome::Records(records) => {
                    let mut categories: Vec<CategoryDecision> = Vec::new();
                    let records = records
                        .into_iter()
                        .map(|(id, items)| {
                            let kept = judge_record(ctx, &mut categories, items, contact.as_ref());
                            (id, kept)
                        })
                        .collect();
                    for c in &categories {
                        crate::foundation::metrics::DECISIONS
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

/// Keeps a record's permitted items. `contact`, when the child is restricted and this
/// practitioner is not named by the policy, is the rule that holds the protected fields back.
fn judge_record(
    ctx: &Context<'_>,
    categories: &mut Vec<CategoryDecision>,
    items: Vec<Item>,
    contact: Option<&Decision>,
) -> Vec<Item> {
    items
        .into_iter()
        .filter_map(|mut item| {
            let idx = match categories.iter().position(|c| c.category == item.category) {
                Some(i) => i,
                None => {
                    categories.push(category_decision(ctx, &item.category));
                    categories.len() - 1
                }
            };
            let c = &mut categories[idx];
            if !c.shown() {
                return None;
            }
            if let Some(contact) = contact {
                let mut held = Vec::new();
                if RESTRICTED_FIELDS.contains(&item.field.as_str()) {
                    held.push(item.field.clone());
                } else {
                    // An address can sit inside a structured value too (an incident's location
                    // and postcode): those keys are held back wherever they are.
                    strip_protected(&mut item.value, &item.field, &mut held);
                }
                for field in &held {
                    if !c.redacted.contains(field) {
                        c.redacted.push(field.clone());
                        c.redaction_rule = Some(contact.rule.clone());
                    }
                }
                if held.first() == Some(&item.field) {
                    return None;
                }
            }
            Some(item)
        })
        .collect()
}

/// Keys that hold where a restricted child can be found, at any depth of a structured value.
const PROTECTED_KEYS: &[&str] = &["address", "postcode", "telephone", "location", "gp"];

fn strip_protected(v: &mut serde_json::Value, path: &str, held: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            let keys: Vec<String> = m
                .keys()
                .filter(|k| PROTECTED_KEYS.contains(&k.as_str()))
                .cloned()
                .collect();
            for k in keys {
                m.remove(&k);
                let name = format!("{path}.{k}");
                if !held.contains(&name) {
                    held.push(name);
                }
            }
            for (k, v) in m.iter_mut() {
                strip_protected(v, &format!("{path}.{k}"), held);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                strip_protected(v, path, held);
            }
        }
        _ => {}
    }
}

fn category_decision(ctx: &Context<'_>, category: &str) -> CategoryDecision {
    decided(ctx, category, ctx.decide(category))
}

/// [`category_decision`] once policy has answered `d`.
fn decided(ctx: &Context<'_>, category: &str, d: Decision) -> CategoryDecision {
    let (shown, reason) = match d.effect {
        Effect::Permit => (true, None),
        Effect::PermitWithConsent => match ctx.consents.state(category, ctx.agency, ctx.purpose) {
            ConsentState::Given => (true, None),
            ConsentState::Withdrawn => (false, Some("consent_withdrawn")),
            ConsentState::Refused => (false, Some("consent_refused")),
            ConsentState::Missing => (false, Some("consent_required")),
        },
        Effect::Deny => (false, Some("no_policy")),
    };
    let mut c = CategoryDecision {
        category: category.to_string(),
        status: if shown { "shown" } else { "withheld" },
        rule: d.rule,
        reason,
        redacted: Vec::new(),
        redaction_rule: None,
        break_glass: None,
        basis: if shown { d.basis } else { Vec::new() },
    };
    // Break-glass passes a breakable denial or a consent not yet sought; never an unbreakable
    // rule, and never a family's refusal or withdrawal.
    if let Some(grant) = ctx.grant {
        let passable = match reason {
            Some("no_policy") => d.breakable,
            Some("consent_required") => true,
            _ => false,
        };
        if passable && grant.purpose == ctx.purpose {
            c.status = "shown";
            c.reason = Some("break_glass");
            c.break_glass = Some(grant.id.clone());
            c.basis = vec!["6d".into()];
        }
    }
    c
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
pub(crate) mod testing;
#[cfg(test)]
mod tests;
