//! Area trends, for education welfare and inclusion officers and local-authority analysts:
//! attendance, persistent absence (below 90 %), suspensions and permanent exclusions, and how
//! many of those children are known to social care — for the authority, each school and each
//! area (postcode district, or ward with a lookup), term by term.
//!
//! - [`facts`]: what each imported record gives the report, derived when the import writes it.
//! - [`data`]: what the figures are read from, and how fresh each source's data is.
//! - [`table`]: the counting, and disclosure control over the whole school / area / term
//!   hierarchy ([`weft_sdc`]: counts from 1 to 5 withheld, and every cell that would give one
//!   away; rates from withheld counts withheld too).
//! - [`places`]: postcode districts and ward lookups.
//!
//! Policy decides who sees what (`policies/policy.csv`, the `area.*` categories): which
//! measures (`area.attendance`, `area.exclusions`, `area.social_care`) and how far
//! (`area.all_schools`: every school and area; `area.own_school`: the rows of one's own school,
//! for a school agency whose id is `urn-` and its URN). Every report read is one audit entry,
//! refusals included; if it cannot be written nothing is returned.

pub mod data;
pub mod facts;
pub mod places;
pub mod table;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::{Effect, Question};
use data::{Catalogue, Loaded, SourceUsed};
use places::{Areas, Wards};
use table::{Figure, Level, Table};

pub const ACTION: &str = "area_report";

/// The categories of area data policy decides on.
pub const ATTENDANCE: &str = "area.attendance";
pub const EXCLUSIONS: &str = "area.exclusions";
pub const SOCIAL_CARE: &str = "area.social_care";
pub const ALL_SCHOOLS: &str = "area.all_schools";
pub const OWN_SCHOOL: &str = "area.own_school";

/// The response's JSON Schema, embedded in the OpenAPI document (`http::contract`).
pub const SCHEMA: &str = include_str!("../../../../schemas/area-report.schema.json");

/// What a report is asked for: a purpose, and optionally one level and one school or area.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AreaQuery {
    /// Purpose of use: `education_welfare` for the default policy.
    pub purpose: Option<String>,
    /// Only rows of this level: `authority`, `school` or `area`.
    pub level: Option<String>,
    /// Only the rows of this school (URN) or area (district or ward code).
    pub key: Option<String>,
}

/// How far a reader sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Authority,
    School(String),
}

/// Which measures and how far, as policy decided, with the deciding rules.
#[derive(Debug, Clone)]
pub struct Access {
    pub attendance: bool,
    pub exclusions: bool,
    pub social_care: bool,
    pub scope: Scope,
    pub rules: Vec<String>,
}

/// One row as published.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow {
    pub level: Level,
    /// The school's URN, the area's code, or `all` for the authority.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub term: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pupils: Option<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attendance_rate: Option<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_absentees: Option<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_absence_rate: Option<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_pupils: Option<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanently_excluded_pupils: Option<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_absentees_known_to_social_care: Option<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_or_excluded_known_to_social_care: Option<Figure>,
    /// The oldest import among the education sources this row counts.
    pub education_data_as_of: Option<String>,
    /// The oldest data among the social-care sources (present with the social-care measures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub social_care_data_as_of: Option<String>,
}

/// The report (`schemas/area-report.schema.json`).
#[derive(Debug, Clone, Serialize)]
pub struct AreaReport {
    pub generated_at: String,
    pub purpose: Purpose,
    /// `authority` or `own_school`.
    pub scope: &'static str,
    /// `postcode_district` or `ward`.
    pub areas: &'static str,
    /// Counts from 1 to this are withheld, with whatever would give them away.
    pub threshold: u64,
    /// The measures this reader may see, in column order.
    pub measures: Vec<&'static str>,
    pub terms: Vec<String>,
    pub sources: Vec<SourceUsed>,
    /// Attendance rows whose term could not be read, counted nowhere.
    pub unplaced_attendance_rows: usize,
    pub rows: Vec<ReportRow>,
}

const ATTENDANCE_MEASURES: &[&str] = &[
    "pupils",
    "attendance_rate",
    "persistent_absentees",
    "persistent_absence_rate",
];
const EXCLUSION_MEASURES: &[&str] = &["suspended_pupils", "permanently_excluded_pupils"];
const SOCIAL_CARE_ATTENDANCE: &str = "persistent_absentees_known_to_social_care";
const SOCIAL_CARE_EXCLUSIONS: &str = "suspended_or_excluded_known_to_social_care";

impl Access {
    /// Policy's answer for `who` reading area data for `purpose`; `None` when it shows nothing.
    pub fn decide(gw: &Gateway, who: &Principal, purpose: Purpose) -> Option<Access> {
        let policy = gw.policy();
        let mut rules = Vec::new();
        let mut allowed = |category: &str| {
            let d = policy.decide(&Question {
                role: who.role,
                agency: &who.agency,
                kind: who.agency_kind,
                category,
                purpose,
            });
            // Consent is per child; an aggregate is never released on it.
            let yes = d.effect == Effect::Permit;
            if yes {
                rules.push(d.rule);
            }
            yes
        };
        let attendance = allowed(ATTENDANCE);
        let exclusions = allowed(EXCLUSIONS);
        let social_care = allowed(SOCIAL_CARE) && (attendance || exclusions);
        let scope = if allowed(ALL_SCHOOLS) {
            Scope::Authority
        } else if allowed(OWN_SCHOOL) {
            Scope::School(who.agency.strip_prefix("urn-")?.to_string())
        } else {
            return None;
        };
        (attendance || exclusions).then_some(Access {
            attendance,
            exclusions,
            social_care,
            scope,
            rules,
        })
    }

    pub fn measures(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.attendance {
            m.extend(ATTENDANCE_MEASURES);
        }
        if self.exclusions {
            m.extend(EXCLUSION_MEASURES);
        }
        if self.social_care && self.attendance {
            m.push(SOCIAL_CARE_ATTENDANCE);
        }
        if self.social_care && self.exclusions {
            m.push(SOCIAL_CARE_EXCLUSIONS);
        }
        m
    }
}

/// The catalogue of the configuration: education `file` sources and social-care sources.
pub fn catalogue(gw: &Gateway) -> Catalogue {
    use crate::foundation::config::AgencyKind;
    let kind = |agency: &str| {
        gw.config
            .agencies
            .iter()
            .find(|a| a.id == agency)
            .map(|a| a.kind)
    };
    let mut cat = Catalogue::default();
    for s in &gw.config.sources {
        let file = matches!(s.adapter, weft_adapters::AdapterConfig::File(_));
        match kind(&s.agency) {
            Some(AgencyKind::Education) if file => {
                cat.education.push((s.id.clone(), s.agency.clone()))
            }
            Some(AgencyKind::SocialCare) => {
                cat.social_care.push((s.id.clone(), s.agency.clone(), file))
            }
            _ => {}
        }
    }
    let pass = gw.index.last_sync();
    cat.last_pass = pass
        .finished_at
        .map(|at| (at, pass.failed.into_iter().map(|(s, _)| s).collect()));
    cat
}

/// How areas are drawn under this configuration.
pub fn areas(gw: &Gateway) -> Result<Areas, Error> {
    match &gw.config.reports.ward_lookup {
        None => Ok(Areas::Districts),
        Some(path) => Wards::load(path).map(Areas::Wards).map_err(|e| {
            tracing::error!(error = %e, "ward lookup unreadable; no area report");
            Error::Unavailable("the ward lookup cannot be read (see the gateway's log)")
        }),
    }
}

/// Everything counted and suppressed, for every reader alike: what a report filters, and what
/// the area alert rule reads.
pub async fn compute(gw: &Gateway) -> Result<(Table, Loaded, Areas), Error> {
    let areas = areas(gw)?;
    let cat = catalogue(gw);
    let loaded = data::load(&gw.store, &cat, &areas).await?;
    let table = table::build(&loaded.pupils, weft_sdc::THRESHOLD);
    Ok((table, loaded, areas))
}

fn parse_level(raw: &str) -> Result<Level, Error> {
    match raw {
        "authority" => Ok(Level::Authority),
        "school" => Ok(Level::School),
        "area" => Ok(Level::Area),
        _ => Err(Error::field("/level", "authority, school or area")),
    }
}

fn parse_purpose(raw: Option<&str>) -> Result<Purpose, Error> {
    let raw = raw.ok_or_else(|| Error::field("/purpose", "a purpose of use is required"))?;
    raw.parse::<Purpose>()
        .map_err(|e| Error::field("/purpose", e.to_string()))
}

/// The area report as `who` may see it. `q` is `Err` when the interface could not read the
/// query; that refusal is audited too.
pub async fn report(
    gw: &Gateway,
    who: &Principal,
    q: Result<AreaQuery, Error>,
) -> Result<AreaReport, Error> {
    let parsed = q.and_then(|q| {
        let purpose = parse_purpose(q.purpose.as_deref())?;
        let level = q.level.as_deref().map(parse_level).transpose()?;
        if q.key.as_deref().is_some_and(|k| k.len() > 64) {
            return Err(Error::field("/key", "at most 64 characters"));
        }
        Ok((purpose, level, q.key))
    });
    let (purpose, level, key) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let Some(access) = Access::decide(gw, who, purpose) else {
        let e = Error::Forbidden("area reports are not open to this role for this purpose");
        return Err(gw.refuse(who, ACTION, None, Some(purpose), e).await);
    };
    let (table, loaded, areas) = match compute(gw).await {
        Ok(t) => t,
        Err(e) => return Err(gw.refuse(who, ACTION, None, Some(purpose), e).await),
    };
    let report = publish(
        &table,
        &loaded,
        &areas,
        &access,
        purpose,
        level,
        key.as_deref(),
    );
    let suppressed = report
        .rows
        .iter()
        .map(|r| {
            [
                r.pupils,
                r.persistent_absentees,
                r.suspended_pupils,
                r.permanently_excluded_pupils,
                r.persistent_absentees_known_to_social_care,
                r.suspended_or_excluded_known_to_social_care,
            ]
            .iter()
            .flatten()
            .filter(|f| f.suppressed)
            .count()
        })
        .sum::<usize>();
    gw.record(
        who,
        ACTION,
        None,
        Some(purpose),
        "shown",
        json!({
            "report": "area",
            "scope": report.scope,
            "measures": report.measures,
            "rules": access.rules,
            "filters": {"level": level.map(Level::as_str), "key": key},
            "rows": report.rows.len(),
            "suppressed_cells": suppressed,
            "threshold": report.threshold,
        }),
    )
    .await?;
    Ok(report)
}

/// The rows `access` may see, filtered by level and key, measures it may not see left out.
pub fn publish(
    table: &Table,
    loaded: &Loaded,
    areas: &Areas,
    access: &Access,
    purpose: Purpose,
    level: Option<Level>,
    key: Option<&str>,
) -> AreaReport {
    let education: Vec<&SourceUsed> = loaded
        .sources
        .iter()
        .filter(|s| s.kind == "education")
        .collect();
    let oldest = |bits: u64| -> Option<String> {
        let mut times = education
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1u64 << (*i).min(63)) != 0)
            .map(|(_, s)| s.data_as_of.clone());
        let first = times.next()?;
        times.try_fold(first, |a, b| match (a, b) {
            (Some(a), Some(b)) => Some(Some(a.min(b))),
            _ => Some(None),
        })?
    };
    let social: Vec<&SourceUsed> = loaded
        .sources
        .iter()
        .filter(|s| s.kind == "social_care")
        .collect();
    let social_as_of = if social.iter().any(|s| s.data_as_of.is_none()) {
        None
    } else {
        social.iter().filter_map(|s| s.data_as_of.clone()).min()
    };
    let rows = table
        .rows
        .iter()
        .filter(|r| match &access.scope {
            Scope::Authority => true,
            Scope::School(urn) => r.level == Level::School && r.key == *urn,
        })
        .filter(|r| level.is_none_or(|l| r.level == l))
        .filter(|r| key.is_none_or(|k| r.key == k))
        .map(|r| {
            let a = |f: Figure| access.attendance.then_some(f);
            let x = |f: Figure| access.exclusions.then_some(f);
            ReportRow {
                level: r.level,
                key: if r.level == Level::Authority {
                    "all".into()
                } else {
                    r.key.clone()
                },
                name: (r.level == Level::Area)
                    .then(|| areas.name(&r.key).map(String::from))
                    .flatten(),
                term: r.term.label(),
                pupils: a(r.pupils),
                attendance_rate: a(r.attendance_rate),
                persistent_absentees: a(r.persistent_absentees),
                persistent_absence_rate: a(r.persistent_absence_rate),
                suspended_pupils: x(r.suspended_pupils),
                permanently_excluded_pupils: x(r.permanently_excluded_pupils),
                persistent_absentees_known_to_social_care: (access.social_care
                    && access.attendance)
                    .then_some(r.persistent_absentees_known_to_social_care),
                suspended_or_excluded_known_to_social_care: (access.social_care
                    && access.exclusions)
                    .then_some(r.suspended_or_excluded_known_to_social_care),
                education_data_as_of: oldest(r.sources),
                social_care_data_as_of: if access.social_care {
                    social_as_of.clone()
                } else {
                    None
                },
            }
        })
        .collect();
    AreaReport {
        generated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        purpose,
        scope: match access.scope {
            Scope::Authority => "authority",
            Scope::School(_) => "own_school",
        },
        areas: areas.kind(),
        threshold: weft_sdc::THRESHOLD,
        measures: access.measures(),
        terms: table.terms.iter().map(|t| t.label()).collect(),
        sources: loaded
            .sources
            .iter()
            .filter(|s| access.social_care || s.kind == "education")
            .cloned()
            .collect(),
        unplaced_attendance_rows: loaded.unplaced_terms,
        rows,
    }
}

/// The report as CSV: one row per published row, the measures the reader may see as columns,
/// `c` for a withheld figure (as the DfE and ONS mark one).
pub fn to_csv(report: &AreaReport) -> Result<Vec<u8>, Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| Error::Internal(format!("writing CSV: {e}"));
    let mut header = vec!["level", "key", "name", "term"];
    header.extend(&report.measures);
    header.push("education_data_as_of");
    let social = report
        .measures
        .iter()
        .any(|m| *m == SOCIAL_CARE_ATTENDANCE || *m == SOCIAL_CARE_EXCLUSIONS);
    if social {
        header.push("social_care_data_as_of");
    }
    out.write_record(&header).map_err(fail)?;
    for r in &report.rows {
        let mut rec = vec![
            r.level.as_str().to_string(),
            r.key.clone(),
            r.name.clone().unwrap_or_default(),
            r.term.clone(),
        ];
        for m in &report.measures {
            let f = match *m {
                "pupils" => r.pupils,
                "attendance_rate" => r.attendance_rate,
                "persistent_absentees" => r.persistent_absentees,
                "persistent_absence_rate" => r.persistent_absence_rate,
                "suspended_pupils" => r.suspended_pupils,
                "permanently_excluded_pupils" => r.permanently_excluded_pupils,
                SOCIAL_CARE_ATTENDANCE => r.persistent_absentees_known_to_social_care,
                _ => r.suspended_or_excluded_known_to_social_care,
            };
            rec.push(f.map(|f| f.csv()).unwrap_or_default());
        }
        rec.push(r.education_data_as_of.clone().unwrap_or_default());
        if social {
            rec.push(r.social_care_data_as_of.clone().unwrap_or_default());
        }
        out.write_record(&rec).map_err(fail)?;
    }
    out.into_inner()
        .map_err(|e| Error::Internal(format!("writing CSV: {e}")))
}
