//! Agency and source configuration for the simulated partners, as an administrator would write it
//! in `weft.toml` for the real systems: which adapter, which queries or pointers, and which data
//! category each value belongs to.
//!
//! Each source carries the identifiers the master child index links on — NHS number and UPN
//! where the system records them, and always its own local id — with the gaps the population
//! puts in them.

use std::collections::BTreeMap;

use weft_adapters::fhir::{FhirConfig, FlagMapping};
use weft_adapters::http_json::{FieldMapping, HttpJsonConfig, IdentityPointers};
use weft_adapters::sql::{Driver, Rows, SqlConfig, SqlQuery};
use weft_adapters::AdapterConfig;

use crate::population::flag_codes;
use crate::sqlseed::queries;

/// An agency as the simulated partners describe it: what a gateway's `[[agencies]]` table says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Agency {
    pub id: String,
    pub name: String,
    /// `education`, `social_care`, `health` or `police`.
    pub kind: &'static str,
}

/// A source as the simulated partners describe it: what a gateway's `[[sources]]` table says
/// (resilience left to the gateway's defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Source {
    pub id: String,
    pub agency: String,
    pub deadline_ms: u64,
    pub adapter: AdapterConfig,
}

pub const SCHOOL_AGENCY: &str = "urn-100001";
pub const SOCIAL_CARE_AGENCY: &str = "weftshire-csc";
pub const HEALTH_AGENCY: &str = "weftshire-health";
pub const POLICE_AGENCY: &str = "weftshire-police";

pub const SCHOOL_SOURCE: &str = "school-mis";
pub const SOCIAL_CARE_SOURCE: &str = "csc-case-system";
pub const HEALTH_SOURCE: &str = "health-fhir";
pub const POLICE_SOURCE: &str = "police-records";

/// The deadline each simulated source gets: the configuration default, stated so the demo and
/// tests do not depend on it silently.
pub const DEADLINE_MS: u64 = 1_500;

/// Where each simulated partner can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub social_care_db: String,
    pub education_db: String,
    /// FHIR base URL, no trailing slash.
    pub fhir: String,
    /// Police API base URL, no trailing slash.
    pub police: String,
}

/// The four agencies: one school, the local authority's children's social care, a health trust
/// and a police force.
pub fn agencies() -> Vec<Agency> {
    let agency = |id: &str, name: &str, kind| Agency {
        id: id.to_string(),
        name: name.to_string(),
        kind,
    };
    vec![
        agency(SCHOOL_AGENCY, "Weftbridge Academy", "education"),
        agency(
            SOCIAL_CARE_AGENCY,
            "Weftshire County Council Children's Services",
            "social_care",
        ),
        agency(
            HEALTH_AGENCY,
            "Weftshire Community Health NHS Trust",
            "health",
        ),
        agency(POLICE_AGENCY, crate::police::FORCE_NAME, "police"),
    ]
}

/// One source per partner system, in the SQL dialect each database URL implies.
pub fn sources(endpoints: &Endpoints) -> anyhow::Result<Vec<Source>> {
    Ok(vec![
        education_source(&endpoints.education_db)?,
        social_care_source(&endpoints.social_care_db)?,
        health_source(&endpoints.fhir),
        police_source(&endpoints.police),
    ])
}

fn source(id: &str, agency: &str, adapter: AdapterConfig) -> Source {
    Source {
        id: id.to_string(),
        agency: agency.to_string(),
        deadline_ms: DEADLINE_MS,
        adapter,
    }
}

fn sql_queries(list: Vec<(&'static str, String, Option<&'static str>)>) -> Vec<SqlQuery> {
    list.into_iter()
        .map(|(category, sql, field)| SqlQuery {
            category: category.to_string(),
            sql,
            rows: if field.is_some() {
                Rows::Many
            } else {
                Rows::One
            },
            field: field.map(str::to_string),
        })
        .collect()
}

/// The case system's reporting database: persons, episodes, allocations, case notes.
pub fn social_care_source(url: &str) -> anyhow::Result<Source> {
    let (driver, _) = Driver::from_url(url)?;
    Ok(source(
        SOCIAL_CARE_SOURCE,
        SOCIAL_CARE_AGENCY,
        AdapterConfig::Sql(SqlConfig {
            url: url.to_string(),
            list: queries::social_care_list(),
            queries: sql_queries(queries::social_care(driver)),
            max_connections: 4,
            preset: None,
            schema: None,
        }),
    ))
}

/// The school MIS reporting database: pupils, attendance by term, exclusions.
pub fn education_source(url: &str) -> anyhow::Result<Source> {
    let (driver, _) = Driver::from_url(url)?;
    Ok(source(
        SCHOOL_SOURCE,
        SCHOOL_AGENCY,
        AdapterConfig::Sql(SqlConfig {
            url: url.to_string(),
            list: queries::education_list(),
            queries: sql_queries(queries::education(driver)),
            max_connections: 4,
            preset: None,
            schema: None,
        }),
    ))
}

/// The health trust's FHIR server. CP-IS codes map to `health.cp_flag`; the sensitive codes are
/// left out on purpose, so they reach the view only as `health.sensitive`.
pub fn health_source(base_url: &str) -> Source {
    let cp = |code: &str| FlagMapping {
        code: code.to_string(),
        category: "health.cp_flag".to_string(),
    };
    source(
        HEALTH_SOURCE,
        HEALTH_AGENCY,
        AdapterConfig::Fhir(FhirConfig {
            base_url: base_url.to_string(),
            bearer_token: None,
            tls: None,
            flag_search: true,
            list: true,
            flags: vec![
                cp(flag_codes::CHILD_PROTECTION),
                cp(flag_codes::LOOKED_AFTER),
            ],
        }),
    )
}

/// Identity pointers shared by the police API and the benchmark's delayed source, which speak
/// the same person shape.
pub(crate) fn person_identity() -> IdentityPointers {
    IdentityPointers {
        local_id: "/personId".to_string(),
        identifiers: BTreeMap::from([("nhs_number".to_string(), "/nhsNumber".to_string())]),
        given_name: Some("/forename".to_string()),
        family_name: Some("/surname".to_string()),
        birth_date: Some("/dateOfBirth".to_string()),
        sex: Some("/sex".to_string()),
        postcode: Some("/postcode".to_string()),
        address_lines: Some("/addressLines".to_string()),
        ..IdentityPointers::default()
    }
}

pub(crate) fn person_fields() -> Vec<FieldMapping> {
    [
        ("/forename", "given_name", "identity.core"),
        ("/surname", "family_name", "identity.core"),
        ("/dateOfBirth", "birth_date", "identity.core"),
        ("/sex", "sex", "identity.core"),
        ("/postcode", "postcode", "identity.contact"),
        ("/incidents", "incidents", "police.incidents"),
        ("/domesticAbuse", "domestic_abuse", "police.domestic_abuse"),
    ]
    .into_iter()
    .map(|(pointer, field, category)| FieldMapping {
        pointer: pointer.to_string(),
        field: field.to_string(),
        category: category.to_string(),
    })
    .collect()
}

/// The force's records API.
pub fn police_source(base_url: &str) -> Source {
    source(
        POLICE_SOURCE,
        POLICE_AGENCY,
        AdapterConfig::HttpJson(HttpJsonConfig {
            record_url: format!("{base_url}/people/{{id}}"),
            list_url: Some(format!("{base_url}/people")),
            list_pointer: String::new(),
            bearer_token: None,
            tls: None,
            identity: person_identity(),
            fields: person_fields(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::SCHOOL_URN;

    fn endpoints(db: &str) -> Endpoints {
        Endpoints {
            social_care_db: db.to_string(),
            education_db: db.to_string(),
            fhir: "http://127.0.0.1:1".into(),
            police: "http://127.0.0.1:2".into(),
        }
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let sql_of = |db: &str| match sources(&endpoints(db)).unwrap().remove(0).adapter {
            AdapterConfig::Sql(c) => c.queries,
            _ => unreachable!("education comes first"),
        };
        assert!(sql_of("postgres://u@h/d")
            .iter()
            .all(|q| q.sql.contains("$1")));
        for db in ["mysql://u@h/d", "sqlite://x.db"] {
            assert!(sql_of(db)
                .iter()
                .all(|q| q.sql.contains('?') && !q.sql.contains("$1")));
        }
    }

    #[test]
    fn school_agency_is_named_by_urn() {
        assert_eq!(SCHOOL_AGENCY, format!("urn-{SCHOOL_URN}"));
    }
}
