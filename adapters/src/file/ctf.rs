//! The DfE Common Transfer File (`CTfile/CTFpupilData/Pupil`), keyed by UPN as written.
//!
//! Version drift handled: `Gender` (before CTF 22) and `Sex`; elements found wherever a version
//! put them (`BasicDetails` or directly under `Pupil`); `InCare` as `true/false/1/0`.
//! Read: identity, the current address (`Address/BS7`), attendance year data, the latest SEN
//! provision and looked-after status. Everything else (assessments, FSM history, contacts) is
//! read past.

use serde_json::{json, Map, Value};

use super::xml::{self, Element};
use super::{values, Batch, ImportError, Limits};
use crate::record::{household, Demographics};

pub fn read(file: &str, text: &str, limits: &Limits, batch: &mut Batch) -> Result<(), ImportError> {
    let root = xml::parse(file, text, limits, &mut batch.warnings)?;
    if !root.name.eq_ignore_ascii_case("CTfile") {
        return Err(root.error(file, "not a Common Transfer File (root is not <CTfile>)"));
    }
    let school = root
        .child("Header")
        .and_then(|h| h.child("SourceSchool"))
        .and_then(|s| s.child_text("URN").map(|(t, _)| t.to_string()));
    let mut pupils = Vec::new();
    root.find_all("Pupil", &mut pupils);
    for pupil in pupils {
        pupil.record_within(file, limits)?;
        let (upn, _) = pupil
            .child_text("UPN")
            .ok_or_else(|| pupil.error(file, "no <UPN>"))?;
        // The pupil's own address, not a contact's (`Contacts/Contact/Address`).
        let address = pupil.child("Address");
        let basic = pupil.child("BasicDetails");
        let mut demographics = Demographics {
            given_name: pupil.child_text("Forename").map(|(t, _)| t.to_string()),
            family_name: pupil.child_text("Surname").map(|(t, _)| t.to_string()),
            birth_date: pupil
                .child("DOB")
                .filter(|e| !e.text.trim().is_empty())
                .map(|e| values::date(&e.text).map_err(|r| e.error(file, r)))
                .transpose()?,
            sex: pupil
                .child_text("Sex")
                .or_else(|| pupil.child_text("Gender"))
                .map(|(t, e)| values::sex(t).map_err(|r| e.error(file, r)))
                .transpose()?
                .map(String::from),
            postcode: address
                .and_then(|a| a.text_of(&["PostCode", "Postcode"]))
                .map(|(t, _)| t.to_string()),
            middle_names: in_pupil(pupil, basic, "MiddleNames"),
            address_lines: address.map(lines_of).unwrap_or_default(),
            ..Demographics::default()
        };
        if let Some(former) = in_pupil(pupil, basic, "FormerSurname") {
            demographics.add_former_family_name(&former);
        }
        if let Some((uprn, _)) =
            address.and_then(|a| a.text_of(&["UniquePropertyReferenceNumber", "UPRN"]))
        {
            demographics.add_household(household::UPRN, uprn);
        }
        // The home telephone, and every contact's (parents and carers, in `Order`).
        let mut phones = Vec::new();
        if let Some(p) = pupil.child("Phones") {
            phones.extend(p.all("Phone").filter(|ph| {
                ph.child_text("TelephoneType")
                    .is_none_or(|(t, _)| t.eq_ignore_ascii_case("H"))
            }));
        }
        if let Some(contacts) = pupil.child("Contacts") {
            for contact in contacts.all("Contact") {
                if let Some(p) = contact.child("Phones") {
                    phones.extend(p.all("Phone"));
                }
            }
        }
        for phone in phones {
            if let Some((number, _)) = phone.child_text("PhoneNo") {
                demographics.add_household(household::PHONE, number);
            }
        }
        let in_care = pupil.parse_of(file, &["InCare"], values::boolean)?;
        let terms = attendance(file, pupil)?;
        let sen = latest_sen(file, pupil)?;
        let d = batch.record(upn);
        d.identifier("upn", Some(upn));
        d.identifier("former_upn", pupil.text_of(&["FormerUPN"]).map(|(t, _)| t));
        d.identifier(
            "uln",
            pupil
                .text_of(&["UniqueLearnerNumber", "ULN"])
                .map(|(t, _)| t),
        );
        d.demographics(demographics);
        if let Some(urn) = &school {
            d.set("education.enrolment", "school_urn", urn.as_str());
        }
        if let Some((y, _)) = pupil.text_of(&["NCyearActual"]) {
            d.set(
                "education.enrolment",
                "year_group",
                y.parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| y.into()),
            );
        }
        if let Some((s, _)) = pupil.text_of(&["EnrolStatus"]) {
            d.set("education.enrolment", "enrolment_status", s);
        }
        if let Some(s) = sen {
            d.set("education.send", "send_status", s);
        }
        if let Some(c) = in_care {
            d.set("social_care.status", "looked_after", c);
            if let Some((la, _)) = pupil.text_of(&["CareAuthority"]) {
                d.set("social_care.status", "care_authority", la);
            }
        }
        for t in terms {
            d.push("education.attendance", "terms", t);
        }
    }
    Ok(())
}

/// `Attendance/YearData`, one entry per academic year.
fn attendance(file: &str, pupil: &Element) -> Result<Vec<Value>, ImportError> {
    let mut years = Vec::new();
    pupil.find_all("YearData", &mut years);
    years
        .into_iter()
        .map(|y| {
            let n = |name: &str| -> Result<Option<i64>, ImportError> {
                y.child_text(name)
                    .map(|(t, e)| values::sessions(t).map_err(|r| e.error(file, r)))
                    .transpose()
            };
            let possible = n("SessionsPossible")?.unwrap_or(0);
            let auth = n("SessionsAuthorised")?.unwrap_or(0);
            let unauth = n("SessionsUnauthorised")?.unwrap_or(0);
            let attended = possible - auth - unauth;
            if attended < 0 {
                return Err(y.error(file, "more absences than possible sessions"));
            }
            let mut t = Map::new();
            t.insert(
                "term".into(),
                y.child_text("Year")
                    .map(|(t, _)| Value::from(t))
                    .unwrap_or(Value::Null),
            );
            t.insert("possible_sessions".into(), possible.into());
            t.insert("attended_sessions".into(), attended.into());
            t.insert("authorised_absence".into(), auth.into());
            t.insert("unauthorised_absence".into(), unauth.into());
            let pct = if possible > 0 {
                (attended as f64 * 1000.0 / possible as f64).round() / 10.0
            } else {
                100.0
            };
            t.insert("attendance_percent".into(), json!(pct));
            Ok(Value::Object(t))
        })
        .collect()
}

/// The provision of the latest `SENhistory/SEN` entry by start date, or a `SENprovision`
/// directly under the pupil.
fn latest_sen(file: &str, pupil: &Element) -> Result<Option<String>, ImportError> {
    let mut entries = Vec::new();
    pupil.find_all("SEN", &mut entries);
    let mut best: Option<(String, &str)> = None;
    for e in entries {
        let start = e
            .parse_of(file, &["StartDate"], values::date)?
            .unwrap_or_default();
        if let Some((p, _)) = e.child_text("SENprovision") {
            if best.as_ref().is_none_or(|(s, _)| start >= *s) {
                best = Some((start, p));
            }
        }
    }
    Ok(best
        .map(|(_, p)| p)
        .or_else(|| pupil.text_of(&["SENprovision"]).map(|(t, _)| t))
        .map(values::sen_provision))
}

/// A value in `BasicDetails`, or directly under the pupil where a version put it there.
fn in_pupil(pupil: &Element, basic: Option<&Element>, name: &str) -> Option<String> {
    basic
        .and_then(|b| b.child_text(name))
        .or_else(|| pupil.child_text(name))
        .map(|(t, _)| t.to_string())
}

/// An address's lines in BS7666 order (`BS7`), or its free lines (`AddressLines`), the
/// postcode apart. Older files put the BS7 elements directly under `Address`.
fn lines_of(address: &Element) -> Vec<String> {
    const BS7: [&str; 8] = [
        "SAON",
        "PAON",
        "Street",
        "Locality",
        "Town",
        "AdministrativeArea",
        "PostTown",
        "County",
    ];
    const FREE: [&str; 5] = [
        "AddressLine1",
        "AddressLine2",
        "AddressLine3",
        "AddressLine4",
        "AddressLine5",
    ];
    let bs7 = address.child("BS7").unwrap_or(address);
    let mut lines: Vec<String> = Vec::new();
    let named = BS7.iter().filter_map(|n| bs7.child_text(n).map(|(t, _)| t));
    let free = address
        .child("AddressLines")
        .into_iter()
        .flat_map(|a| FREE.iter().filter_map(|n| a.child_text(n).map(|(t, _)| t)));
    for line in named.chain(free) {
        // The town is often given as `Town` and `PostTown` both.
        if !lines.iter().any(|l| l.eq_ignore_ascii_case(line)) {
            lines.push(line.to_string());
        }
    }
    lines
}
