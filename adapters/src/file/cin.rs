//! The CIN census XML (`Message/Children/Child`), keyed by `LAchildID`.
//!
//! Version drift handled: `GenderCurrent` (0/1/2/9, before 2024) and `Sex` (`M`/`F`/`U` since
//! 2024, and in practice the numeric codes too); `true/false/TRUE/FALSE/0/1` booleans; the
//! 2024+ `PreProceedingsandFGDM` block, which is recognised and not shown.
//!
//! Stray text: some files carry text between child elements (the public 2026 sample has
//! `PersonBirthDate` loose inside `ChildIdentifiers`). No version of the schema allows mixed
//! content and the elements around it are intact, so the text is ignored and the import report
//! lists it as a warning with its line; the import is not rejected for it.

use serde_json::{Map, Value};

use super::xml::{self, Element};
use super::{values, Batch, ImportError, Limits};
use crate::record::Demographics;

pub fn read(file: &str, text: &str, limits: &Limits, batch: &mut Batch) -> Result<(), ImportError> {
    let root = xml::parse(file, text, limits, &mut batch.warnings)?;
    if !root.name.eq_ignore_ascii_case("Message") {
        return Err(root.error(file, "not a CIN census file (root is not <Message>)"));
    }
    let mut children = Vec::new();
    root.find_all("Child", &mut children);
    for child in children {
        child.record_within(file, limits)?;
        let ids = child
            .child("ChildIdentifiers")
            .ok_or_else(|| child.error(file, "no <ChildIdentifiers>"))?;
        let (la_id, _) = ids
            .child_text("LAchildID")
            .ok_or_else(|| ids.error(file, "no <LAchildID>"))?;
        let demographics = Demographics {
            birth_date: ids.parse_of(file, &["PersonBirthDate"], values::date)?,
            sex: ids
                .parse_of(file, &["Sex", "GenderCurrent"], values::sex)?
                .map(String::from),
            ..Demographics::default()
        };
        let expected = ids.parse_of(file, &["ExpectedPersonBirthDate"], values::date)?;
        let death = ids.parse_of(file, &["PersonDeathDate"], values::date)?;
        let mut episodes = Vec::new();
        for cin in child.all("CINdetails") {
            episodes.extend(details(file, cin)?);
        }
        let mut disabilities: Vec<&str> = Vec::new();
        if let Some(d) = child.find("Disabilities") {
            disabilities.extend(
                d.all("Disability")
                    .map(|e| e.text.trim())
                    .filter(|t| !t.is_empty()),
            );
        }
        let d = batch.record(la_id);
        d.identifier("upn", ids.child_text("UPN").map(|(t, _)| t));
        d.identifier("former_upn", ids.child_text("FormerUPN").map(|(t, _)| t));
        d.demographics(demographics);
        if let Some(e) = expected {
            d.set("identity.core", "expected_birth_date", e);
        }
        if let Some(e) = death {
            d.set("identity.core", "death_date", e);
        }
        if let Some((e, _)) = child.text_of(&["Ethnicity"]) {
            d.set("identity.core", "ethnicity", e);
        }
        if !disabilities.is_empty() {
            d.set("social_care.status", "disabilities", disabilities);
        }
        for e in episodes {
            d.push("social_care.status", "episodes", e);
        }
    }
    Ok(())
}

/// One `CINdetails`: the child-in-need episode, then each child-protection plan within it.
fn details(file: &str, cin: &Element) -> Result<Vec<Value>, ImportError> {
    let date = |e: &Element, name: &str| e.parse_of(file, &[name], values::date);
    let mut out = Vec::new();
    let mut ep = Map::new();
    ep.insert("kind".into(), "child_in_need".into());
    put(
        &mut ep,
        "category",
        cin.child_text("PrimaryNeedCode").map(|(t, _)| t.into()),
    );
    put(
        &mut ep,
        "start_date",
        date(cin, "CINreferralDate")?.map(Value::from),
    );
    let end = match cin.child("CINclosureDate") {
        Some(e) if !e.text.trim().is_empty() => {
            Some(values::date(&e.text).map_err(|r| e.error(file, r))?)
        }
        _ => None,
    };
    put(&mut ep, "end_date", end.map(Value::from));
    put(
        &mut ep,
        "referral_source",
        cin.child_text("ReferralSource").map(|(t, _)| t.into()),
    );
    put(
        &mut ep,
        "closure_reason",
        cin.child_text("ReasonForClosure").map(|(t, _)| t.into()),
    );
    if let Some((t, e)) = cin.child_text("ReferralNFA") {
        ep.insert(
            "referral_nfa".into(),
            values::boolean(t).map_err(|r| e.error(file, r))?.into(),
        );
    }
    out.push(Value::Object(ep));
    for s47 in cin.all("Section47") {
        // Read so that a malformed value rejects the file; shown as an episode of its own.
        let mut e = Map::new();
        e.insert("kind".into(), "section_47".into());
        put(
            &mut e,
            "start_date",
            date(s47, "S47ActualStartDate")?.map(Value::from),
        );
        if let Some((t, el)) = s47.child_text("ICPCnotRequired") {
            e.insert(
                "icpc_not_required".into(),
                values::boolean(t).map_err(|r| el.error(file, r))?.into(),
            );
        }
        out.push(Value::Object(e));
    }
    for cp in cin.all("ChildProtectionPlans") {
        let mut e = Map::new();
        e.insert("kind".into(), "child_protection".into());
        let category = cp
            .child_text("LatestCategoryOfAbuse")
            .or_else(|| cp.child_text("InitialCategoryOfAbuse"));
        put(&mut e, "category", category.map(|(t, _)| t.into()));
        put(
            &mut e,
            "start_date",
            date(cp, "CPPstartDate")?.map(Value::from),
        );
        put(&mut e, "end_date", date(cp, "CPPendDate")?.map(Value::from));
        out.push(Value::Object(e));
    }
    Ok(out)
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    map.insert(key.into(), value.unwrap_or(Value::Null));
}
