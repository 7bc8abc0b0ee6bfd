//! Areas: a pupil's postcode district (the outward code, `WT3` of `WT3 5QP`), or the ward a
//! lookup file places the postcode in (`reports.ward_lookup`, `schemas/ward-lookup.schema.json`).
//! A pupil with no postcode, or one the lookup does not place, is in the area `unknown`, so the
//! areas still add up to the authority.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

/// The area of a pupil whose postcode is missing or not placed.
pub const UNKNOWN: &str = "unknown";

/// A postcode upper-cased without spaces, if it has the shape of one (2 to 4 characters of
/// outward code, then a digit and two letters); a partial one (`WT3`, `WT3 5`) as far as it goes.
fn compact(postcode: &str) -> String {
    postcode
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The postcode district (outward code) of a full postcode; `None` if it is not one.
pub fn district(postcode: &str) -> Option<String> {
    let c = compact(postcode);
    if !(5..=7).contains(&c.len()) {
        return None;
    }
    let (outward, inward) = c.split_at(c.len() - 3);
    let mut inward = inward.chars();
    let ok = outward
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_alphabetic())
        && inward.next().is_some_and(|ch| ch.is_ascii_digit())
        && inward.all(|ch| ch.is_ascii_alphabetic());
    ok.then(|| outward.to_string())
}

/// Wards by postcode, district or sector, as a lookup file gives them.
#[derive(Debug, Clone, Default)]
pub struct Wards {
    /// Compact postcode, sector (`WT35`) or district (`WT3`) → ward code.
    by_prefix: HashMap<String, String>,
    pub names: HashMap<String, String>,
}

/// The lookup file's schema, embedded like the others (`crate::foundation::schema`).
const SCHEMA: &str = include_str!("../../../../schemas/ward-lookup.schema.json");

/// The first way `value` breaks the schema: where, and how.
fn schema_error(value: &serde_json::Value) -> Option<(String, String)> {
    static VALIDATOR: std::sync::OnceLock<Option<jsonschema::Validator>> =
        std::sync::OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        serde_json::from_str(SCHEMA)
            .ok()
            .and_then(|s| jsonschema::validator_for(&s).ok())
    });
    match validator {
        Some(v) => v
            .iter_errors(value)
            .next()
            .map(|e| (e.instance_path.to_string(), e.to_string())),
        // Compiled in the unit test below; unreachable in a build that passed it.
        None => Some((
            String::new(),
            "the ward lookup schema does not compile".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct File {
    wards: Vec<WardEntry>,
}

#[derive(Debug, Deserialize)]
struct WardEntry {
    code: String,
    name: String,
    postcodes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WardError {
    #[error("ward lookup {path}: {problem}")]
    Read { path: String, problem: String },
    #[error("ward lookup {path}: {pointer}: {problem}")]
    Invalid {
        path: String,
        pointer: String,
        problem: String,
    },
}

impl Wards {
    /// Reads and checks a lookup file against its schema. One postcode, sector or district
    /// given to two wards is refused: an area report must not depend on the file's order.
    pub fn load(path: &Path) -> Result<Wards, WardError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| WardError::Read {
            path: p.clone(),
            problem: e.to_string(),
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| WardError::Read {
                path: p.clone(),
                problem: format!("not JSON: line {} column {}", e.line(), e.column()),
            })?;
        if let Some((pointer, problem)) = schema_error(&value) {
            return Err(WardError::Invalid {
                path: p,
                pointer,
                problem,
            });
        }
        let file: File = serde_json::from_value(value).map_err(|e| WardError::Read {
            path: p.clone(),
            problem: e.to_string(),
        })?;
        let mut wards = Wards::default();
        for (i, w) in file.wards.into_iter().enumerate() {
            for (j, pc) in w.postcodes.iter().enumerate() {
                let key = compact(pc);
                if let Some(other) = wards.by_prefix.insert(key, w.code.clone()) {
                    if other != w.code {
                        return Err(WardError::Invalid {
                            path: p,
                            pointer: format!("/wards/{i}/postcodes/{j}"),
                            problem: format!("also given to ward {other}"),
                        });
                    }
                }
            }
            wards.names.insert(w.code, w.name);
        }
        Ok(wards)
    }

    /// The ward of a postcode: the full postcode's entry, else its sector's, else its
    /// district's.
    pub fn ward(&self, postcode: &str) -> Option<&str> {
        let c = compact(postcode);
        let outward = district(postcode)?;
        let sector = format!("{outward}{}", c.get(outward.len()..outward.len() + 1)?);
        let found = [c.as_str(), sector.as_str(), outward.as_str()]
            .into_iter()
            .find_map(|k| self.by_prefix.get(k).map(String::as_str));
        found
    }
}

/// How areas are drawn: districts, or the wards of a lookup.
#[derive(Debug, Clone)]
pub enum Areas {
    Districts,
    Wards(Wards),
}

impl Areas {
    pub fn kind(&self) -> &'static str {
        match self {
            Areas::Districts => "postcode_district",
            Areas::Wards(_) => "ward",
        }
    }

    pub fn area_of(&self, postcode: Option<&str>) -> String {
        let Some(pc) = postcode else {
            return UNKNOWN.into();
        };
        match self {
            Areas::Districts => district(pc),
            Areas::Wards(w) => w.ward(pc).map(String::from),
        }
        .unwrap_or_else(|| UNKNOWN.into())
    }

    pub fn name(&self, key: &str) -> Option<&str> {
        match self {
            Areas::Districts => None,
            Areas::Wards(w) => w.names.get(key).map(String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn districts_of_postcodes_as_written() {
        assert_eq!(district("WT3 5QP").as_deref(), Some("WT3"));
        assert_eq!(district("wt35qp").as_deref(), Some("WT3"));
        assert_eq!(district("EC1A 1BB").as_deref(), Some("EC1A"));
        assert_eq!(district("M1 1AE").as_deref(), Some("M1"));
        assert_eq!(district("not a postcode"), None);
        assert_eq!(district("WT3"), None);
        assert_eq!(Areas::Districts.area_of(None), UNKNOWN);
    }

    #[test]
    fn wards_by_postcode_then_sector_then_district() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wards.json");
        std::fs::write(
            &path,
            r#"{"wards": [
                {"code": "E05000001", "name": "Central", "postcodes": ["WT3"]},
                {"code": "E05000002", "name": "Riverside", "postcodes": ["WT3 5", "WT1 1AA"]},
                {"code": "E05000003", "name": "Hill", "postcodes": ["WT3 5QP"]}
            ]}"#,
        )
        .unwrap();
        let w = Wards::load(&path).unwrap();
        assert_eq!(w.ward("WT3 5QP"), Some("E05000003"));
        assert_eq!(w.ward("WT3 5QQ"), Some("E05000002"));
        assert_eq!(w.ward("WT3 6AA"), Some("E05000001"));
        assert_eq!(w.ward("WT1 1AA"), Some("E05000002"));
        assert_eq!(w.ward("WT1 1AB"), None);
        let areas = Areas::Wards(w);
        assert_eq!(areas.area_of(Some("WT9 9ZZ")), UNKNOWN);
        assert_eq!(areas.name("E05000002"), Some("Riverside"));

        std::fs::write(
            &path,
            r#"{"wards": [
                {"code": "E05000001", "name": "Central", "postcodes": ["WT3"]},
                {"code": "E05000002", "name": "Riverside", "postcodes": ["wt3"]}
            ]}"#,
        )
        .unwrap();
        let e = Wards::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("/wards/1/postcodes/0") && e.contains("E05000001"),
            "{e}"
        );
        std::fs::write(&path, r#"{"wards": [{"code": "E05000001"}]}"#).unwrap();
        assert!(Wards::load(&path).is_err());
    }
}
