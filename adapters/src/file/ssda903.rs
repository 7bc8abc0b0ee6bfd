//! The SSDA903 looked-after children return, as the CSV tables the DfE portal takes (`header`,
//! `episodes`) or as the XML export (`EXPSSDA903/CHILD`). Records are keyed by `CHILD`
//! (`CHILDID` in the XML), the LA's own child id. Dates are `DD/MM/YYYY`.
//!
//! Placement postcodes (`PL_POST`, `HOME_POST`) and the placement's `URN` are read past and
//! never passed on: where a looked-after child lives is the one thing a view must not leak.

use serde_json::{Map, Value};

use super::census::Table;
use super::xml::{self, Element};
use super::{values, Batch, ImportError, Limits};
use crate::record::Demographics;

const CHILD: &[&str] = &["child", "childid"];

pub fn header_csv(
    file: &str,
    text: &str,
    limits: &Limits,
    batch: &mut Batch,
) -> Result<(), ImportError> {
    let table = Table::read(file, text, limits)?;
    table.require(CHILD)?;
    for row in table.rows() {
        let id = row.need(CHILD)?;
        let demographics = Demographics {
            birth_date: row.parse(&["dob"], values::date)?,
            sex: row.parse(&["sex"], values::sex)?.map(String::from),
            ..Demographics::default()
        };
        // Read for validation: a mother's child's date of birth is not shown.
        row.parse(&["mcdob"], values::date)?;
        let d = batch.record(id);
        d.identifier("upn", row.get(&["upn"]));
        d.demographics(demographics);
        if let Some(e) = row.get(&["ethnic"]) {
            d.set("identity.core", "ethnicity", e);
        }
        d.set("social_care.status", "looked_after_return", true);
    }
    Ok(())
}

pub fn episodes_csv(
    file: &str,
    text: &str,
    limits: &Limits,
    batch: &mut Batch,
) -> Result<(), ImportError> {
    let table = Table::read(file, text, limits)?;
    table.require(CHILD)?;
    table.require(&["decom"])?;
    for row in table.rows() {
        let id = row.need(CHILD)?;
        let mut e = Map::new();
        e.insert("kind".into(), "looked_after".into());
        let text = |names: &[&str]| row.get(names).map(Value::from).unwrap_or(Value::Null);
        e.insert("category".into(), text(&["ls"]));
        let start = row
            .parse(&["decom"], values::date)?
            .ok_or_else(|| row.error(&["decom"], "empty episode start date"))?;
        e.insert("start_date".into(), start.into());
        e.insert(
            "end_date".into(),
            row.parse(&["dec"], values::date)?
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        e.insert("placement".into(), text(&["place", "pl"]));
        e.insert("placement_provider".into(), text(&["placeprovider"]));
        e.insert("reason_new_episode".into(), text(&["rne"]));
        e.insert("reason_ceased".into(), text(&["rec"]));
        e.insert("need_code".into(), text(&["cin"]));
        batch
            .record(id)
            .push("social_care.status", "episodes", Value::Object(e));
    }
    Ok(())
}

pub fn xml(file: &str, text: &str, limits: &Limits, batch: &mut Batch) -> Result<(), ImportError> {
    let root = xml::parse(file, text, limits, &mut batch.warnings)?;
    let mut children = Vec::new();
    root.find_all("CHILD", &mut children);
    if children.is_empty() && !root.name.eq_ignore_ascii_case("EXPSSDA903") {
        return Err(root.error(file, "not an SSDA903 export (no <CHILD> elements)"));
    }
    for child in children {
        child.record_within(file, limits)?;
        let header = child
            .child("HEADER")
            .ok_or_else(|| child.error(file, "no <HEADER>"))?;
        let (id, _) = header
            .child_text("CHILDID")
            .ok_or_else(|| header.error(file, "no <CHILDID>"))?;
        let demographics = Demographics {
            birth_date: header.parse_of(file, &["DOB"], values::date)?,
            sex: header
                .parse_of(file, &["SEX"], values::sex)?
                .map(String::from),
            ..Demographics::default()
        };
        let mut episodes = Vec::new();
        for ep in child.all("EPISODE") {
            episodes.push(episode(file, ep)?);
        }
        let d = batch.record(id);
        d.identifier("upn", header.child_text("UPN").map(|(t, _)| t));
        d.demographics(demographics);
        if let Some((e, _)) = header.child_text("ETHNIC") {
            d.set("identity.core", "ethnicity", e);
        }
        d.set("social_care.status", "looked_after_return", true);
        for e in episodes {
            d.push("social_care.status", "episodes", e);
        }
    }
    Ok(())
}

fn episode(file: &str, ep: &Element) -> Result<Value, ImportError> {
    let text = |name: &str| {
        ep.child_text(name)
            .map(|(t, _)| Value::from(t))
            .unwrap_or(Value::Null)
    };
    let date = |name: &str| -> Result<Value, ImportError> {
        Ok(match ep.child_text(name) {
            Some((t, el)) => values::date(t).map_err(|r| el.error(file, r))?.into(),
            None => Value::Null,
        })
    };
    let start = date("DECOM")?;
    if start.is_null() {
        return Err(ep.error(file, "no <DECOM> (episode start date)"));
    }
    let mut e = Map::new();
    e.insert("kind".into(), "looked_after".into());
    e.insert("category".into(), text("LS"));
    e.insert("start_date".into(), start);
    e.insert("end_date".into(), date("DEC")?);
    e.insert("placement".into(), text("PL"));
    e.insert("placement_provider".into(), text("PLACE_PROVIDER"));
    e.insert("reason_new_episode".into(), text("RNE"));
    e.insert("reason_ceased".into(), text("REC"));
    e.insert("need_code".into(), text("CIN"));
    Ok(Value::Object(e))
}
