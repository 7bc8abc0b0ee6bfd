//! The data-sharing policy: casbin's model and policy files, read by casbin, compiled into an
//! index for the read path.
//!
//! casbin is the reference: it parses the files (so any casbin implementation reads the same
//! policy) and [`Reference`] answers through casbin's own enforcer, for `weft policy check` and
//! for the property test that proves the compiled index answers exactly as casbin does. The
//! index exists because casbin scans every rule on every question; keyed by domain, role,
//! purpose and category family, a question here looks at a handful of candidate rules however
//! large the policy grows.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::RwLock;

use casbin::{CoreApi, DefaultModel, Enforcer, FileAdapter, MgmtApi};
use serde::Serialize;

use crate::foundation::config::AgencyKind;
use crate::foundation::domain::{Purpose, Role, AREA_CATEGORIES, CATEGORIES, QUALITY_CATEGORIES};

/// The rule id reported when no rule matched.
pub const NO_RULE: &str = "default-deny";

/// A pseudo-category that policy uses to name who may see the address, telephone and GP of a
/// restricted record (NHS `R`/`V`, a child in a refuge).
pub const RESTRICTED_CONTACT: &str = "restricted.contact";

/// Fields that a restricted record never discloses without [`RESTRICTED_CONTACT`].
pub const RESTRICTED_FIELDS: &[&str] = &["address", "postcode", "telephone", "gp"];

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
    /// Lawful-basis codes of the deciding rule (e.g. `6e`, `s18`); empty for a denial.
    pub basis: Vec<String>,
    /// Whether break-glass may pass this denial; false for rules marked `unbreakable`.
    pub breakable: bool,
}

impl Decision {
    pub fn default_deny() -> Self {
        Decision {
            effect: Effect::Deny,
            rule: NO_RULE.into(),
            basis: Vec::new(),
            breakable: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot load policy: {0}")]
    Load(String),
    #[error("policy rule {rule}: {problem}")]
    Rule { rule: String, problem: String },
}

/// One question: may this practitioner see this category for this purpose?
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub role: Role,
    /// The practitioner's agency id (the casbin domain).
    pub agency: &'a str,
    pub kind: AgencyKind,
    pub category: &'a str,
    pub purpose: Purpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    None,
    Consent,
    Unbreakable,
}

#[derive(Debug, Clone)]
struct Rule {
    sub: String,
    dom: String,
    kind: String,
    cat: String,
    purpose: String,
    allow: bool,
    /// A `never_break` line: no effect on the decision, but break-glass never passes a denial
    /// of what it matches.
    never_break: bool,
    cond: Condition,
    id: String,
    basis: Vec<String>,
}

/// Index key: domain, subject, purpose, category family (text before the first `.`, or `*`),
/// each interned to a number so that a question allocates nothing to look itself up.
type Key = (u32, u32, u32, u32);

/// A loaded, compiled policy. Replaced whole when the files change.
pub struct Policy {
    rules: Vec<Rule>,
    index: HashMap<Key, Vec<usize>>,
    /// Every word that appears in a key, numbered.
    words: HashMap<String, u32>,
    /// Each role with every role it inherits (including itself and `*`), as word numbers.
    roles: HashMap<Role, Vec<u32>>,
    /// Answers already given. A view asks about every category, most of them two or three
    /// times, and the same few questions recur from view to view; the answer depends only on
    /// the policy, which never changes in place, so it is worked out once.
    memo: RwLock<HashMap<Asked, HashMap<Box<str>, Decision>>>,
}

/// What a decision depends on besides the category: the agency only through the word it is in
/// the policy (every agency the policy never names shares one answer), so the memo stays as
/// small as the policy however many agencies ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Asked {
    role: Role,
    agency: Option<u32>,
    kind: AgencyKind,
    purpose: Purpose,
}

/// Most answers remembered for one [`Asked`]: the vocabulary's categories fit many times
/// over; a source that invents categories cannot grow the memo without bound.
const MEMO_CATEGORIES: usize = 256;
/// Most [`Asked`] remembered: roles × agency kinds × purposes × the agencies the policy names
/// fit easily.
const MEMO_ASKED: usize = 16_384;

/// Reads the model and policy with casbin.
async fn enforcer(model: &Path, policy: &Path) -> Result<Enforcer, PolicyError> {
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
    let mut e = Enforcer::new(model, adapter).await.map_err(load)?;
    e.enable_log(false);
    Ok(e)
}

/// The category family a pattern or category belongs to, for the index.
fn family(cat: &str) -> &str {
    if cat.starts_with('*') {
        return "*";
    }
    cat.split('.').next().unwrap_or(cat)
}

/// casbin's `keyMatch`: `*` in the pattern matches any suffix.
fn key_match(key: &str, pattern: &str) -> bool {
    match pattern.find('*') {
        Some(i) if key.len() > i => key[..i] == pattern[..i],
        Some(i) => key == &pattern[..i],
        None => key == pattern,
    }
}

impl Policy {
    /// The configured policy, with the configured agencies as the domains it may name.
    pub async fn from_config(
        config: &crate::foundation::config::Config,
    ) -> Result<Policy, PolicyError> {
        let agencies: Vec<String> = config.agencies.iter().map(|a| a.id.clone()).collect();
        Policy::load(&config.policy.model, &config.policy.policy, Some(&agencies)).await
    }

    /// Loads the files with casbin, lints every rule, and builds the index. `agencies`, when
    /// given, are the agency ids a domain override may name.
    pub async fn load(
        model: &Path,
        policy: &Path,
        agencies: Option<&[String]>,
    ) -> Result<Policy, PolicyError> {
        let e = enforcer(model, policy).await?;
        let mut rules = Vec::new();
        for r in e.get_policy() {
            rules.push(parse_rule(&r, agencies)?);
        }
        let mut roles = HashMap::new();
        for g in e.get_grouping_policy() {
            for name in g.iter().take(2) {
                if name.parse::<Role>().is_err() {
                    return Err(PolicyError::Rule {
                        rule: format!("g, {}", g.join(", ")),
                        problem: format!("unknown role {name:?}"),
                    });
                }
            }
        }
        let rm = e.get_role_manager();
        for &role in Role::ALL {
            let mut all: BTreeSet<String> = rm
                .write()
                .get_roles(role.as_str(), None)
                .into_iter()
                .collect();
            // Inheritance is transitive; follow it to the top (casbin's limit is 10 levels).
            let mut frontier: Vec<String> = all.iter().cloned().collect();
            while let Some(r) = frontier.pop() {
                for parent in rm.write().get_roles(&r, None) {
                    if all.insert(parent.clone()) {
                        frontier.push(parent);
                    }
                }
            }
            all.insert(role.as_str().to_string());
            all.insert("*".to_string());
            roles.insert(role, all.into_iter().collect::<Vec<String>>());
        }
        let mut words: HashMap<String, u32> = HashMap::new();
        let mut word = |w: &str| -> u32 {
            let next = words.len() as u32;
            *words.entry(w.to_string()).or_insert(next)
        };
        word("*");
        let mut index: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            let key = (
                word(&r.dom),
                word(&r.sub),
                word(&r.purpose),
                word(family(&r.cat)),
            );
            index.entry(key).or_default().push(i);
        }
        // A role no rule names still matches `*` rules, which is why `*` is always a word.
        let roles = roles
            .into_iter()
            .map(|(role, names)| {
                let ids = names
                    .iter()
                    .filter_map(|n| words.get(n.as_str()).copied())
                    .collect();
                (role, ids)
            })
            .collect();
        Ok(Policy {
            rules,
            index,
            words,
            roles,
            memo: RwLock::new(HashMap::new()),
        })
    }

    /// Decides one question exactly as casbin's model does: a matching deny wins (the first in
    /// file order is reported); otherwise the first matching allow; otherwise `default-deny`.
    pub fn decide(&self, q: &Question<'_>) -> Decision {
        self.answer(q, Decision::clone)
    }

    /// The effect alone of [`Policy::decide`]'s answer, without copying the rule and basis.
    pub fn effect(&self, q: &Question<'_>) -> Effect {
        self.answer(q, |d| d.effect)
    }

    /// `read` of the answer to `q`, from the memo when it is there.
    fn answer<R>(&self, q: &Question<'_>, read: impl FnOnce(&Decision) -> R) -> R {
        let asked = Asked {
            role: q.role,
            agency: self.words.get(q.agency).copied(),
            kind: q.kind,
            purpose: q.purpose,
        };
        if let Ok(memo) = self.memo.read() {
            if let Some(d) = memo.get(&asked).and_then(|m| m.get(q.category)) {
                return read(d);
            }
        }
        let d = self.work_out(q);
        let answer = read(&d);
        // A poisoned memo only means answers are worked out again.
        if let Ok(mut memo) = self.memo.write() {
            if memo.len() < MEMO_ASKED || memo.contains_key(&asked) {
                let answers = memo.entry(asked).or_default();
                if answers.len() < MEMO_CATEGORIES {
                    answers.insert(q.category.into(), d);
                }
            }
        }
        answer
    }

    /// [`Policy::decide`] without the memo: the index's candidate rules, matched in file order.
    fn work_out(&self, q: &Question<'_>) -> Decision {
        let word = |w: &str| self.words.get(w).copied();
        let star = word("*");
        let pair = |w: &str| [star, word(w)];
        let mut candidates: Vec<usize> = Vec::with_capacity(16);
        let roles = self.roles.get(&q.role).map(Vec::as_slice).unwrap_or(&[]);
        for dom in pair(q.agency).into_iter().flatten() {
            for &sub in roles {
                for purpose in pair(q.purpose.as_str()).into_iter().flatten() {
                    for fam in pair(family(q.category)).into_iter().flatten() {
                        if let Some(ids) = self.index.get(&(dom, sub, purpose, fam)) {
                            candidates.extend_from_slice(ids);
                        }
                    }
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut allow: Option<&Rule> = None;
        let mut deny: Option<&Rule> = None;
        let mut never_break = false;
        for &i in &candidates {
            let r = &self.rules[i];
            if (r.kind != "*" && r.kind != q.kind.as_str()) || !key_match(q.category, &r.cat) {
                continue;
            }
            if r.never_break {
                never_break = true;
            } else if !r.allow {
                deny.get_or_insert(r);
            } else {
                allow.get_or_insert(r);
            }
        }
        if let Some(r) = deny {
            return Decision {
                effect: Effect::Deny,
                rule: r.id.clone(),
                basis: Vec::new(),
                breakable: r.cond != Condition::Unbreakable && !never_break,
            };
        }
        match allow {
            None => Decision {
                breakable: !never_break,
                ..Decision::default_deny()
            },
            Some(r) => Decision {
                effect: if r.cond == Condition::Consent {
                    Effect::PermitWithConsent
                } else {
                    Effect::Permit
                },
                rule: r.id.clone(),
                basis: r.basis.clone(),
                breakable: true,
            },
        }
    }

    /// Whether any data category could need consent for this practitioner and purpose; when
    /// none can, a view need not read the consent register at all.
    pub fn may_need_consent(
        &self,
        role: Role,
        agency: &str,
        kind: AgencyKind,
        purpose: Purpose,
    ) -> bool {
        CATEGORIES.iter().any(|category| {
            self.effect(&Question {
                role,
                agency,
                kind,
                category,
                purpose,
            }) == Effect::PermitWithConsent
        })
    }

    /// How many `p` rules the policy holds.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }
}

fn parse_rule(r: &[String], agencies: Option<&[String]>) -> Result<Rule, PolicyError> {
    let id = r.get(7).cloned().unwrap_or_else(|| r.join(", "));
    let bad = |problem: String| PolicyError::Rule {
        rule: id.clone(),
        problem,
    };
    if r.len() != 9 {
        return Err(bad(format!(
            "expected 9 fields after `p` (role, agency, agency kind, category, purpose, effect, condition, id, basis), found {}",
            r.len()
        )));
    }
    let (sub, dom, kind, cat, purpose) = (&r[0], &r[1], &r[2], &r[3], &r[4]);
    if sub != "*" && sub.parse::<Role>().is_err() {
        return Err(bad(format!("unknown role {sub:?}")));
    }
    if dom != "*" {
        if let Some(known) = agencies {
            if !known.iter().any(|a| a == dom) {
                return Err(bad(format!("unknown agency {dom:?}")));
            }
        }
    }
    if kind != "*" && !AgencyKind::ALL.iter().any(|k| k.as_str() == kind) {
        return Err(bad(format!("unknown agency kind {kind:?}")));
    }
    let known_cat = cat == RESTRICTED_CONTACT
        || CATEGORIES.iter().any(|c| key_match(c, cat))
        || AREA_CATEGORIES.iter().any(|c| key_match(c, cat))
        || QUALITY_CATEGORIES.iter().any(|c| key_match(c, cat))
        || key_match(RESTRICTED_CONTACT, cat);
    if !known_cat {
        return Err(bad(format!(
            "category {cat:?} matches no known data category"
        )));
    }
    if purpose != "*" && purpose.parse::<Purpose>().is_err() {
        return Err(bad(format!("unknown purpose {purpose:?}")));
    }
    let (allow, never_break) = match r[5].as_str() {
        "allow" => (true, false),
        "deny" => (false, false),
        "never_break" => (false, true),
        other => {
            return Err(bad(format!(
                "effect must be allow, deny or never_break, not {other:?}"
            )))
        }
    };
    let cond = match (allow, r[6].as_str()) {
        (_, "-") => Condition::None,
        _ if never_break => {
            return Err(bad("a never_break line takes no condition (-)".into()));
        }
        (true, "consent") => Condition::Consent,
        (false, "unbreakable") => Condition::Unbreakable,
        (_, other) => {
            return Err(bad(format!(
            "condition {other:?} is not allowed here (allow: - or consent; deny: - or unbreakable)"
        )))
        }
    };
    let basis: Vec<String> = r[8]
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "-")
        .map(String::from)
        .collect();
    if let Some(code) = basis
        .iter()
        .find(|b| super::basis_text(b).starts_with("unrecognised"))
    {
        return Err(bad(format!("unknown lawful-basis code {code:?}")));
    }
    if allow && basis.is_empty() {
        return Err(bad("an allow rule must name its lawful basis".into()));
    }
    Ok(Rule {
        sub: sub.clone(),
        dom: dom.clone(),
        kind: kind.clone(),
        cat: cat.clone(),
        purpose: purpose.clone(),
        allow,
        never_break,
        cond,
        id: r[7].clone(),
        basis,
    })
}

/// casbin's own enforcer over the same files: the reference answer.
pub struct Reference {
    enforcer: Enforcer,
    /// The same model over only the `never_break` lines, each read as an allow: casbin's answer
    /// to "does a never_break line match?". (casbin's effects ignore any other `eft`, so the
    /// main enforcer decides as if those lines were not there.)
    never_break: Enforcer,
}

impl Reference {
    pub async fn load(model: &Path, policy: &Path) -> Result<Reference, PolicyError> {
        let load = |e: casbin::Error| PolicyError::Load(e.to_string());
        let enforcer = enforcer(model, policy).await?;
        let model_text = std::fs::read_to_string(model)
            .map_err(|e| PolicyError::Load(format!("{}: {e}", model.display())))?;
        let m = DefaultModel::from_str(&model_text).await.map_err(load)?;
        let mut never_break = Enforcer::new(m, casbin::MemoryAdapter::default())
            .await
            .map_err(load)?;
        never_break.enable_log(false);
        let lines: Vec<Vec<String>> = enforcer
            .get_policy()
            .into_iter()
            .filter(|r| r.get(5).map(String::as_str) == Some("never_break"))
            .map(|mut r| {
                r[5] = "allow".into();
                r
            })
            .collect();
        if !lines.is_empty() {
            never_break.add_policies(lines).await.map_err(load)?;
        }
        let groups = enforcer.get_grouping_policy();
        if !groups.is_empty() {
            never_break
                .add_grouping_policies(groups)
                .await
                .map_err(load)?;
        }
        Ok(Reference {
            enforcer,
            never_break,
        })
    }

    /// casbin's answer and the rule it names (for a denial, the deny that ended evaluation).
    pub fn decide(&self, q: &Question<'_>) -> Result<Decision, PolicyError> {
        let request = (
            q.role.as_str(),
            q.agency,
            q.kind.as_str(),
            q.category,
            q.purpose.as_str(),
        );
        let never_break = self
            .never_break
            .enforce(request)
            .map_err(|e| PolicyError::Load(e.to_string()))?;
        let (allowed, explain) = self
            .enforcer
            .enforce_ex((
                q.role.as_str(),
                q.agency,
                q.kind.as_str(),
                q.category,
                q.purpose.as_str(),
            ))
            .map_err(|e| PolicyError::Load(e.to_string()))?;
        let rule = if allowed {
            explain.first()
        } else {
            explain.last()
        };
        let Some(rule) = rule else {
            return Ok(Decision {
                breakable: !never_break,
                ..Decision::default_deny()
            });
        };
        let cond = rule.get(6).map(String::as_str).unwrap_or("-");
        Ok(Decision {
            effect: match (allowed, cond) {
                (false, _) => Effect::Deny,
                (true, "consent") => Effect::PermitWithConsent,
                (true, _) => Effect::Permit,
            },
            rule: rule.get(7).cloned().unwrap_or_else(|| NO_RULE.into()),
            basis: if allowed {
                rule.get(8)
                    .map(|b| {
                        b.split(';')
                            .map(str::trim)
                            .filter(|s| !s.is_empty() && *s != "-")
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
            breakable: allowed || (cond != "unbreakable" && !never_break),
        })
    }
}

/// Every role, kind, category and purpose: the questions a policy can be asked.
pub fn all_questions<'a>(
    agencies: &'a [(String, AgencyKind)],
) -> impl Iterator<Item = Question<'a>> + 'a {
    let cats: Vec<&'static str> = CATEGORIES
        .iter()
        .copied()
        .chain(std::iter::once(RESTRICTED_CONTACT))
        .collect();
    agencies.iter().flat_map(move |(agency, kind)| {
        let cats = cats.clone();
        Role::ALL.iter().flat_map(move |&role| {
            let cats = cats.clone();
            Purpose::ALL.iter().flat_map(move |&purpose| {
                cats.clone().into_iter().map(move |category| Question {
                    role,
                    agency,
                    kind: *kind,
                    category,
                    purpose,
                })
            })
        })
    })
}
