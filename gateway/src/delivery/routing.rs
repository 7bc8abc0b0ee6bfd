//! Routing: who a concern or an alert goes to. The rules live in `policies/routing.toml`, beside
//! the information-sharing policy, and are checked whole at start-up — a recipient that names an
//! unknown agency or an undefined recipient stops the gateway rather than dropping concerns.
//!
//! What routing needs to know about a child (its social care status, its allocated worker, the
//! school that has it on roll) comes from the sources, through the same adapters as a view: see
//! [`facts`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::delivery::outbox::Address;
use crate::foundation::config::{AgencyKind, Config};
use crate::foundation::domain::{vocabulary, Role};
use crate::pipeline::fanout::{fan_out, Outcome};
use crate::pipeline::resolve::{Index, Link};
use crate::sources::Sources;

vocabulary! {
    /// What a concern is about; the schema lists the same words.
    Category {
        Neglect => "neglect",
        PhysicalAbuse => "physical_abuse",
        EmotionalAbuse => "emotional_abuse",
        SexualAbuse => "sexual_abuse",
        DomesticAbuse => "domestic_abuse",
        Exploitation => "exploitation",
        Radicalisation => "radicalisation",
        Attendance => "attendance",
        MentalHealth => "mental_health",
        Other => "other",
    }
}

vocabulary! {
    /// How soon the reporter believes someone must act.
    Urgency {
        Immediate => "immediate",
        Urgent => "urgent",
        Routine => "routine",
    }
}

vocabulary! {
    /// The child's social care status when routing is decided.
    Status {
        Unmatched => "unmatched",
        Unknown => "unknown",
        NotKnown => "not_known",
        ChildInNeed => "child_in_need",
        ChildProtection => "child_protection",
        LookedAfter => "looked_after",
    }
}

impl Status {
    /// Known to social care: an open case of any kind.
    pub fn known(self) -> bool {
        matches!(
            self,
            Status::ChildInNeed | Status::ChildProtection | Status::LookedAfter
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot read routing rules {path}: {problem}")]
    Read { path: String, problem: String },
    #[error("routing rules: `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> RoutingError {
    RoutingError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Relation {
    AllocatedSocialWorker,
    School,
    Health,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientFile {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    agency: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    relation: Option<Relation>,
}

/// A list in the file that may be `"*"` (or absent) for "anything".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AnyOr {
    Star(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    #[serde(default)]
    categories: Option<AnyOr>,
    #[serde(default)]
    urgency: Option<AnyOr>,
    #[serde(default)]
    status: Option<AnyOr>,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbsenceFile {
    threshold_percent: f64,
    drop_points: f64,
    window_days: i64,
    min_sessions: i64,
    anchor: NaiveDate,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncompassFile {
    to: Vec<String>,
    not_on_roll: Vec<String>,
    school_day_starts: String,
    timezone_offset: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    statuses: Vec<String>,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    persistent_absence: AbsenceFile,
    exclusion: TargetsFile,
    domestic_abuse: EncompassFile,
    access: AccessFile,
    #[serde(default)]
    area_persistent_absence: Option<AreaAbsenceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AreaAbsenceFile {
    threshold_percent: f64,
    #[serde(default = "area_levels")]
    levels: Vec<String>,
    to: Vec<String>,
    #[serde(default)]
    school_role: Option<Role>,
}

fn area_levels() -> Vec<String> {
    vec!["school".into(), "area".into()]
}

/// A school's or area's persistent absence rising past a threshold, from the area report
/// (`crate::write::area_alerts`).
#[derive(Debug, Clone)]
pub struct AreaAbsenceRule {
    pub threshold_percent: f64,
    /// `school`, `area`, or both.
    pub levels: Vec<String>,
    /// Fixed recipients (an agency and a role), resolved.
    pub to: Vec<Address>,
    /// A school's alert also goes to this role at the school's own agency (`urn-` and its URN),
    /// when the configuration has one.
    pub school_role: Option<Role>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingFile {
    triage: String,
    recipients: BTreeMap<String, RecipientFile>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    alerts: AlertsFile,
}

/// A named recipient, resolved against a child by [`Routing::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recipient {
    Fixed(Address),
    AllocatedWorker,
    School(Role),
    Health(Role),
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    categories: Option<BTreeSet<Category>>,
    urgency: Option<BTreeSet<Urgency>>,
    status: Option<BTreeSet<Status>>,
    to: Vec<String>,
}

/// Persistent absence, as configured.
#[derive(Debug, Clone)]
pub struct AbsenceRule {
    pub threshold_percent: f64,
    pub drop_points: f64,
    pub window_days: i64,
    pub min_sessions: i64,
    pub anchor: NaiveDate,
    pub to: Vec<String>,
}

/// Operation Encompass, as configured.
#[derive(Debug, Clone)]
pub struct EncompassRule {
    pub to: Vec<String>,
    pub not_on_roll: Vec<String>,
    pub school_day_starts: NaiveTime,
    pub offset: FixedOffset,
}

impl EncompassRule {
    /// When the next school day starts after `at`: the DSL must have the notification by then.
    /// School days are Monday to Friday; term dates are not known to the gateway, so a holiday
    /// only makes the deadline earlier than it need be.
    pub fn deliver_by(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let local = at.with_timezone(&self.offset);
        let mut day = local.date_naive();
        if local.time() >= self.school_day_starts {
            day = day.succ_opt().unwrap_or(day);
        }
        while matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
            day = day.succ_opt().unwrap_or(day);
        }
        let start = day.and_time(self.school_day_starts);
        self.offset
            .from_local_datetime(&start)
            .single()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(at)
    }
}

/// The rules in force, checked.
#[derive(Debug, Clone)]
pub struct Routing {
    recipients: BTreeMap<String, Recipient>,
    rules: Vec<Rule>,
    triage: String,
    pub absence: AbsenceRule,
    pub exclusion: Vec<String>,
    pub encompass: EncompassRule,
    pub access_statuses: BTreeSet<Status>,
    pub access: Vec<String>,
    pub area_absence: Option<AreaAbsenceRule>,
}

/// One delivery routing decided: to whom, and which rule (or fallback) sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Routed {
    pub to: Address,
    /// The rule, or `<rule>/triage: <why>` when a relation could not be resolved.
    pub rule: String,
}

fn set<T: FromStr<Err: std::fmt::Display> + Ord>(
    key: &str,
    v: Option<AnyOr>,
) -> Result<Option<BTreeSet<T>>, RoutingError> {
    match v {
        None => Ok(None),
        Some(AnyOr::Star(s)) if s == "*" => Ok(None),
        Some(AnyOr::Star(s)) => Err(invalid(key, format!("{s:?}: use \"*\" or a list"))),
        Some(AnyOr::List(items)) => items
            .iter()
            .map(|s| {
                s.parse::<T>()
                    .map_err(|e| invalid(key, format!("{s:?}: {e}")))
            })
            .collect::<Result<BTreeSet<T>, _>>()
            .map(Some),
    }
}

impl Routing {
    /// Reads and checks the routing file against the configuration's agencies.
    pub fn load(path: &Path, config: &Config) -> Result<Routing, RoutingError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutingError::Read {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        Self::parse(&text, config)
    }

    pub fn parse(text: &str, config: &Config) -> Result<Routing, RoutingError> {
        let file: RoutingFile = toml::from_str(text).map_err(|e| RoutingError::Read {
            path: "routing".into(),
            problem: e.to_string(),
        })?;
        let mut recipients = BTreeMap::new();
        for (name, r) in file.recipients {
            let key = format!("recipients.{name}");
            let recipient = match (r.relation, r.agency, r.role) {
                (None, Some(agency), Some(role)) => {
                    if config.agency(&agency).is_none() {
                        return Err(invalid(
                            format!("{key}.agency"),
                            format!("no agency {agency:?} in the configuration"),
                        ));
                    }
                    Recipient::Fixed(Address::Role { agency, role })
                }
                (Some(Relation::AllocatedSocialWorker), None, None) => Recipient::AllocatedWorker,
                (Some(Relation::School), None, Some(role)) => Recipient::School(role),
                (Some(Relation::Health), None, Some(role)) => Recipient::Health(role),
                _ => {
                    return Err(invalid(
                        key,
                        "give `agency` and `role`, or `relation` (with `role` for school and \
                         health, without for allocated_social_worker)",
                    ))
                }
            };
            recipients.insert(name, recipient);
        }
        let check_names = |key: &str, names: &[String]| -> Result<(), RoutingError> {
            for n in names {
                if !recipients.contains_key(n) {
                    return Err(invalid(key, format!("no recipient named {n:?}")));
                }
            }
            Ok(())
        };
        check_names("triage", std::slice::from_ref(&file.triage))?;
        if !matches!(recipients.get(&file.triage), Some(Recipient::Fixed(_))) {
            return Err(invalid(
                "triage",
                "must be a fixed agency and role, so it can always be reached",
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            let key = format!("rules[{i}]");
            check_names(&format!("{key}.to"), &r.to)?;
            rules.push(Rule {
                categories: set(&format!("{key}.categories"), r.categories)?,
                urgency: set(&format!("{key}.urgency"), r.urgency)?,
                status: set(&format!("{key}.status"), r.status)?,
                name: r.name,
                to: r.to,
            });
        }
        let a = file.alerts;
        let abs = a.persistent_absence;
        check_names("alerts.persistent_absence.to", &abs.to)?;
        if abs.window_days < 1 {
            return Err(invalid(
                "alerts.persistent_absence.window_days",
                "at least 1",
            ));
        }
        if !(0.0..=100.0).contains(&abs.threshold_percent) {
            return Err(invalid(
                "alerts.persistent_absence.threshold_percent",
                "between 0 and 100",
            ));
        }
        check_names("alerts.exclusion.to", &a.exclusion.to)?;
        let enc = a.domestic_abuse;
        check_names("alerts.domestic_abuse.to", &enc.to)?;
        check_names("alerts.domestic_abuse.not_on_roll", &enc.not_on_roll)?;
        let school_day_starts = NaiveTime::parse_from_str(&enc.school_day_starts, "%H:%M")
            .map_err(|e| invalid("alerts.domestic_abuse.school_day_starts", e.to_string()))?;
        let offset = parse_offset(&enc.timezone_offset)
            .ok_or_else(|| invalid("alerts.domestic_abuse.timezone_offset", "+HH:MM or -HH:MM"))?;
        check_names("alerts.access.to", &a.access.to)?;
        let access_statuses = a
            .access
            .statuses
            .iter()
            .map(|s| {
                s.parse::<Status>()
                    .map_err(|e| invalid("alerts.access.statuses", format!("{s:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let area_absence = match a.area_persistent_absence {
            None => None,
            Some(r) => {
                let key = "alerts.area_persistent_absence";
                if !(0.0..=100.0).contains(&r.threshold_percent) {
                    return Err(invalid(
                        format!("{key}.threshold_percent"),
                        "between 0 and 100",
                    ));
                }
                if let Some(l) = r
                    .levels
                    .iter()
                    .find(|l| !matches!(l.as_str(), "school" | "area"))
                {
                    return Err(invalid(
                        format!("{key}.levels"),
                        format!("{l:?}: school or area"),
                    ));
                }
                check_names(&format!("{key}.to"), &r.to)?;
                let mut to = Vec::new();
                for n in &r.to {
                    match recipients.get(n) {
                        Some(Recipient::Fixed(a)) => to.push(a.clone()),
                        _ => {
                            return Err(invalid(
                                format!("{key}.to"),
                                format!("{n:?}: an area's alert has no child, so only a fixed agency and role"),
                            ))
                        }
                    }
                }
                Some(AreaAbsenceRule {
                    threshold_percent: r.threshold_percent,
                    levels: r.levels,
                    to,
                    school_role: r.school_role,
                })
            }
        };
        Ok(Routing {
            area_absence,
            recipients,
            rules,
            triage: file.triage,
            absence: AbsenceRule {
                threshold_percent: abs.threshold_percent,
                drop_points: abs.drop_points,
                window_days: abs.window_days,
                min_sessions: abs.min_sessions,
                anchor: abs.anchor,
                to: abs.to,
            },
            exclusion: a.exclusion.to,
            encompass: EncompassRule {
                to: enc.to,
                not_on_roll: enc.not_on_roll,
                school_day_starts,
                offset,
            },
            access_statuses,
            access: a.access.to,
        })
    }

    /// The recipients of a concern: every matching rule's, each address once; the triage
    /// recipient when nothing matches or the child is not matched.
    pub fn concern(&self, category: Category, urgency: Urgency, facts: &ChildFacts) -> Vec<Routed> {
        let mut named: Vec<(&str, &str)> = Vec::new();
        for rule in &self.rules {
            let ok = rule
                .categories
                .as_ref()
                .is_none_or(|s| s.contains(&category))
                && rule.urgency.as_ref().is_none_or(|s| s.contains(&urgency))
                && rule
                    .status
                    .as_ref()
                    .is_none_or(|s| s.contains(&facts.status));
            if ok {
                named.extend(rule.to.iter().map(|t| (t.as_str(), rule.name.as_str())));
            }
        }
        if named.is_empty() || facts.status == Status::Unmatched {
            named.push((self.triage.as_str(), "triage"));
        }
        self.resolve(&named, facts)
    }

    /// Resolves recipient names for a child, in order, each address once. A relation that
    /// cannot be resolved goes to triage, with the reason in the rule.
    pub fn resolve(&self, names: &[(&str, &str)], facts: &ChildFacts) -> Vec<Routed> {
        let mut out: Vec<Routed> = Vec::new();
        let mut push = |to: Address, rule: String| {
            if !out.iter().any(|r| r.to == to) {
                out.push(Routed { to, rule });
            }
        };
        for (name, rule) in names {
            let Some(recipient) = self.recipients.get(*name) else {
                continue;
            };
            let found: Result<Vec<Address>, &str> = match recipient {
                Recipient::Fixed(a) => Ok(vec![a.clone()]),
                Recipient::AllocatedWorker => facts
                    .allocated_worker
                    .clone()
                    .map(|a| vec![a])
                    .ok_or("no allocated worker"),
                Recipient::School(role) if !facts.schools.is_empty() => Ok(facts
                    .schools
                    .iter()
                    .map(|agency| Address::Role {
                        agency: agency.clone(),
                        role: *role,
                    })
                    .collect()),
                Recipient::School(_) => Err("not on a school roll"),
                Recipient::Health(role) if !facts.health.is_empty() => Ok(facts
                    .health
                    .iter()
                    .map(|agency| Address::Role {
                        agency: agency.clone(),
                        role: *role,
                    })
                    .collect()),
                Recipient::Health(_) => Err("no health record"),
            };
            match found {
                Ok(addresses) => {
                    for a in addresses {
                        push(a, rule.to_string());
                    }
                }
                Err(why) => {
                    if let Some(Recipient::Fixed(t)) = self.recipients.get(&self.triage) {
                        push(t.clone(), format!("{rule}/triage: {why}"));
                    }
                }
            }
        }
        out
    }

    /// Resolves a configured list of names with one rule label.
    pub fn resolve_all(&self, names: &[String], rule: &str, facts: &ChildFacts) -> Vec<Routed> {
        let named: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), rule)).collect();
        self.resolve(&named, facts)
    }

    /// Resolves names without ever falling back to triage: for notifications that are only for
    /// the named people (an access notification with no allocated worker goes nowhere).
    pub fn resolve_strict(&self, names: &[String], rule: &str, facts: &ChildFacts) -> Vec<Routed> {
        self.resolve_all(names, rule, facts)
            .into_iter()
            .filter(|r| !r.rule.contains("/triage"))
            .collect()
    }
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let secs = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
    FixedOffset::east_opt(sign * secs)
}

/// What routing needs to know about a child, read from the sources.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildFacts {
    pub status: Status,
    /// The allocated worker, as the case system records them (a user id).
    pub allocated_worker: Option<Address>,
    /// Agencies whose school holds the child on roll.
    pub schools: Vec<String>,
    /// Agencies whose health system holds the child.
    pub health: Vec<String>,
}

impl ChildFacts {
    /// A concern or event that matched no child: only triage can take it.
    pub fn unmatched() -> Self {
        ChildFacts {
            status: Status::Unmatched,
            allocated_worker: None,
            schools: Vec::new(),
            health: Vec::new(),
        }
    }
}

/// Reads a child's routing facts from the social care, education and health sources that hold
/// the child, concurrently, within each source's deadline. A social care source that cannot be
/// asked makes the status `unknown` — routed as its own case, never read as "not known".
pub async fn facts(
    index: &Index,
    sources: &Sources,
    child: &str,
) -> Result<ChildFacts, sqlx::Error> {
    let Some(links) = index.links(child).await? else {
        return Ok(ChildFacts::unmatched());
    };
    let wanted = |l: &&Link| {
        sources.get(&l.source).is_some_and(|s| {
            matches!(
                s.agency.kind,
                AgencyKind::SocialCare | AgencyKind::Education | AgencyKind::Health
            )
        })
    };
    let links: Vec<Link> = links.iter().filter(wanted).cloned().collect();
    let fetched = fan_out(sources, &links).await;
    Ok(read_facts(&fetched))
}

/// The facts in a fetch already made (a view's), without asking the sources again.
pub fn read_facts(fetched: &[crate::pipeline::fanout::Fetched]) -> ChildFacts {
    let mut status = Status::NotKnown;
    let mut sc_unavailable = false;
    let mut allocated_worker = None;
    let mut schools = Vec::new();
    let mut health = Vec::new();
    for f in fetched {
        let agency = &f.source.agency;
        let records = match &f.outcome {
            Outcome::Records(r) => r,
            Outcome::Unavailable(_) => {
                if agency.kind == AgencyKind::SocialCare {
                    sc_unavailable = true;
                }
                continue;
            }
            Outcome::NoRecord | Outcome::NotAsked => continue,
        };
        for (_, items) in records {
            for item in items {
                match (agency.kind, item.category.as_str(), item.field.as_str()) {
                    (AgencyKind::SocialCare, "social_care.status", _) => {
                        if let Some(s) = open_status(&item.value) {
                            status = status.max(s);
                        }
                    }
                    (AgencyKind::SocialCare, "social_care.allocated_worker", "worker") => {
                        if let Some(w) = item.value.as_str().filter(|w| !w.trim().is_empty()) {
                            allocated_worker = Some(Address::User {
                                agency: agency.id.clone(),
                                user: w.to_string(),
                            });
                        }
                    }
                    (AgencyKind::Education, "education.enrolment", "on_roll") => {
                        let on = match &item.value {
                            Value::Bool(b) => *b,
                            Value::Number(n) => n.as_i64() == Some(1),
                            Value::String(s) => matches!(s.as_str(), "1" | "true" | "yes"),
                            _ => false,
                        };
                        if on && !schools.contains(&agency.id) {
                            schools.push(agency.id.clone());
                        }
                    }
                    (AgencyKind::Health, _, _) if !health.contains(&agency.id) => {
                        health.push(agency.id.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    if sc_unavailable && status == Status::NotKnown {
        status = Status::Unknown;
    }
    ChildFacts {
        status,
        allocated_worker,
        schools,
        health,
    }
}

/// The strongest open episode in a `social_care.status` value: an array of episodes (or one)
/// each with a `kind` and, when closed, an `end_date`.
fn open_status(v: &Value) -> Option<Status> {
    let episodes: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => return None,
    };
    episodes
        .into_iter()
        .filter(|e| e.get("end_date").is_none_or(Value::is_null))
        .filter_map(|e| e.get("kind").and_then(Value::as_str))
        .filter_map(|k| match k {
            "child_in_need" => Some(Status::ChildInNeed),
            "child_protection" => Some(Status::ChildProtection),
            "looked_after" => Some(Status::LookedAfter),
            _ => None,
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::schema::Schemas;

    fn config() -> Config {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = format!(
            "listen = \"127.0.0.1:0\"\ninsecure_plaintext = true\n\
             [database]\nurl = \"sqlite://x.db\"\n\
             [policy]\nmodel = {:?}\npolicy = {:?}\n\
             [auth]\nissuer = \"i\"\naudience = \"a\"\n\
             [[auth.keys]]\nkid = \"k\"\nalgorithm = \"ES256\"\npublic_key = {:?}\n\
             [[agencies]]\nid = \"weftshire-csc\"\nname = \"LA\"\nkind = \"social_care\"\n",
            repo.join("policies/model.conf").display().to_string(),
            repo.join("policies/policy.csv").display().to_string(),
            repo.join("policies/model.conf").display().to_string(),
        );
        Config::from_toml(&text, &repo, &Schemas::load().unwrap()).unwrap()
    }

    fn repo_rules() -> Routing {
        let c = config();
        Routing::load(&c.policy.routing_path(), &c).expect("the repository's rules load")
    }

    fn facts(status: Status, worker: bool) -> ChildFacts {
        ChildFacts {
            status,
            allocated_worker: worker.then(|| Address::User {
                agency: "weftshire-csc".into(),
                user: "w1".into(),
            }),
            schools: vec!["urn-1".into()],
            health: vec![],
        }
    }

    fn mash() -> Address {
        Address::Role {
            agency: "weftshire-csc".into(),
            role: Role::MashOfficer,
        }
    }

    #[test]
    fn open_case_goes_to_mash_and_the_allocated_worker() {
        let r = repo_rules();
        let routed = r.concern(
            Category::Neglect,
            Urgency::Immediate,
            &facts(Status::ChildProtection, true),
        );
        let to: Vec<_> = routed.iter().map(|r| r.to.clone()).collect();
        assert_eq!(
            to,
            vec![
                mash(),
                Address::User {
                    agency: "weftshire-csc".into(),
                    user: "w1".into()
                }
            ]
        );
    }

    #[test]
    fn unmatched_and_unresolvable_go_to_triage_once() {
        let r = repo_rules();
        let routed = r.concern(Category::Other, Urgency::Routine, &ChildFacts::unmatched());
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].to, mash());
        // An open case without a worker: MASH once, with the reason kept on the first rule.
        let routed = r.concern(
            Category::Neglect,
            Urgency::Urgent,
            &facts(Status::ChildInNeed, false),
        );
        assert!(
            routed.iter().filter(|x| x.to == mash()).count() == 1,
            "{routed:?}"
        );
    }

    #[test]
    fn bad_rules_name_the_key() {
        let c = config();
        let good = std::fs::read_to_string(c.policy.routing_path()).unwrap();
        let bad = good.replace("to = [\"school_nurse\"]", "to = [\"nobody\"]");
        let e = Routing::parse(&bad, &c).unwrap_err().to_string();
        assert!(e.contains("rules[2].to") && e.contains("nobody"), "{e}");
        let bad = good.replace(
            "agency = \"weftshire-csc\"\nrole = \"mash_officer\"",
            "agency = \"nowhere\"\nrole = \"mash_officer\"",
        );
        let e = Routing::parse(&bad, &c).unwrap_err().to_string();
        assert!(e.contains("recipients.mash.agency"), "{e}");
        let bad = good.replace(
            "categories = [\"attendance\"]",
            "categories = [\"truancy\"]",
        );
        let e = Routing::parse(&bad, &c).unwrap_err().to_string();
        assert!(
            e.contains("rules[3].categories") && e.contains("truancy"),
            "{e}"
        );
    }

    #[test]
    fn encompass_deadline_is_the_next_school_morning() {
        let r = repo_rules().encompass;
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // Tuesday night → Wednesday 08:30.
        assert_eq!(
            r.deliver_by(at("2025-10-07T23:10:00Z")),
            at("2025-10-08T08:30:00Z")
        );
        // Tuesday early morning → the same morning.
        assert_eq!(
            r.deliver_by(at("2025-10-07T02:00:00Z")),
            at("2025-10-07T08:30:00Z")
        );
        // Friday evening → Monday.
        assert_eq!(
            r.deliver_by(at("2025-10-10T19:00:00Z")),
            at("2025-10-13T08:30:00Z")
        );
    }

    #[test]
    fn open_status_takes_the_strongest_open_episode() {
        let v = serde_json::json!([
            {"kind": "looked_after", "end_date": "2020-01-01"},
            {"kind": "child_in_need", "end_date": null},
            {"kind": "child_protection"}
        ]);
        assert_eq!(open_status(&v), Some(Status::ChildProtection));
        assert_eq!(open_status(&serde_json::json!([])), None);
    }

    #[test]
    fn status_order_matches_strength() {
        assert!(Status::LookedAfter > Status::ChildProtection);
        assert!(Status::ChildProtection > Status::ChildInNeed);
        assert!(Status::ChildInNeed > Status::NotKnown);
    }
}
