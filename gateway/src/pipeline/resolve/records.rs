//! The source records a data administrator compares when deciding a match: the record the
//! matcher asks about, and the records the proposed child already has, each with the fields the
//! matcher compared (names, date of birth, sex, postcode and address, national identifiers).
//! A reviewer who sees only a probability and a list of comparison levels cannot tell a typo
//! from a twin; seeing both records side by side, they can.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use weft_adapters::Demographics;

use crate::pipeline::resolve::Index;

/// One source record's identity, as the source gave it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordIdentity {
    pub source: String,
    pub local_id: String,
    pub given_name: Option<String>,
    pub middle_names: Option<String>,
    pub family_name: Option<String>,
    pub former_family_names: Vec<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub postcode: Option<String>,
    pub address_lines: Vec<String>,
    /// National identifiers as the source gave them, each with whether its check passed (a
    /// failed one is never used to link).
    pub identifiers: Vec<IdentifierCheck>,
    /// Whether the postcode and address lines were held back (`null` and empty above) because
    /// a child on either side of the match is restricted and policy does not name the reviewer
    /// for `restricted.contact` ([`RecordIdentity::hold_back_address`]).
    pub address_held_back: bool,
    /// The child the record is linked to now, if any: whose restriction it shares.
    #[serde(skip)]
    pub child_id: Option<String>,
}

impl RecordIdentity {
    /// Holds back where the child can be found: the postcode and the address lines.
    pub fn hold_back_address(&mut self) {
        self.postcode = None;
        self.address_lines.clear();
        self.address_held_back = true;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentifierCheck {
    pub kind: String,
    pub value: String,
    pub valid: bool,
}

fn of_row(r: &sqlx::any::AnyRow) -> Result<RecordIdentity, sqlx::Error> {
    let demographics: String = r.try_get("demographics")?;
    let identifiers: String = r.try_get("identifiers")?;
    let d: Demographics = serde_json::from_str(&demographics).unwrap_or_default();
    let identifiers: Vec<IdentifierCheck> = serde_json::from_str(&identifiers).unwrap_or_default();
    Ok(RecordIdentity {
        source: r.try_get("source")?,
        local_id: r.try_get("local_id")?,
        given_name: d.given_name,
        middle_names: d.middle_names,
        family_name: d.family_name,
        former_family_names: d.former_family_names,
        birth_date: d.birth_date,
        sex: d.sex,
        postcode: d.postcode,
        address_lines: d.address_lines,
        identifiers,
        address_held_back: false,
        child_id: r.try_get("child_id")?,
    })
}

/// The record `source`/`local_id`, if the index holds it.
pub async fn record(
    index: &Index,
    source: &str,
    local_id: &str,
) -> Result<Option<RecordIdentity>, sqlx::Error> {
    sqlx::query(
        "SELECT source, local_id, child_id, identifiers, demographics FROM source_records \
         WHERE source = $1 AND local_id = $2",
    )
    .bind(source)
    .bind(local_id)
    .fetch_optional(&index.store().pool)
    .await?
    .as_ref()
    .map(of_row)
    .transpose()
}

/// The records linked to `child` now, other than `source`/`local_id` (the record under review,
/// which a recheck finds among them).
pub async fn child_records(
    index: &Index,
    child: &str,
    source: &str,
    local_id: &str,
) -> Result<Vec<RecordIdentity>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT source, local_id, child_id, identifiers, demographics FROM source_records \
         WHERE child_id = $1 ORDER BY source, local_id",
    )
    .bind(child)
    .fetch_all(&index.store().pool)
    .await?;
    rows.iter()
        .map(of_row)
        .filter(|r| {
            r.as_ref()
                .map_or(true, |r| !(r.source == source && r.local_id == local_id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_identifiers_keep_their_check() {
        let text = r#"[{"kind":"nhs_number","value":"4857773456","valid":true,"problem":null},
                       {"kind":"upn","value":"A12","valid":false,"problem":"check letter"}]"#;
        let ids: Vec<IdentifierCheck> = serde_json::from_str(text).unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids[0].valid);
        assert!(!ids[1].valid);
    }
}
