//! What the pages' forms share: a field's error as the error summary and the field show it, the
//! design system's three-box dates, and where a JSON Schema error of the body a form became
//! lands on the form. A module of its own so that pages use it without using each other.

use std::collections::BTreeMap;

use serde::Serialize;

/// A problem with one field of a form, as the error summary and the field show it.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: &str) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A date typed into a form's three boxes that is not a real date (or is in the future).
#[derive(Debug, Clone, Copy)]
pub struct BadDate;

/// The form's date `name` (`name-day`, `name-month`, `name-year`) as `YYYY-MM-DD`; `None` if all
/// three are empty.
pub fn form_date(fields: &BTreeMap<String, String>, name: &str) -> Result<Option<String>, BadDate> {
    let part = |p: &str| {
        fields
            .get(&format!("{name}-{p}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let (d, m, y) = (part("day"), part("month"), part("year"));
    if d.is_empty() && m.is_empty() && y.is_empty() {
        return Ok(None);
    }
    let (Ok(d), Ok(m), Ok(y)) = (d.parse::<u32>(), m.parse::<u32>(), y.parse::<i32>()) else {
        return Err(BadDate);
    };
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .filter(|date| *date <= chrono::Utc::now().date_naive() && y >= 1900)
        .map(|date| Some(date.format("%Y-%m-%d").to_string()))
        .ok_or(BadDate)
}

/// The pointer of the value a schema error is about: for a missing property, the property's
/// own (the schema reports it at its parent).
pub fn pointer_of(e: &crate::foundation::error::SchemaError) -> String {
    let missing = e
        .message
        .strip_suffix(" is a required property")
        .map(|name| name.trim_matches('"'));
    match missing {
        Some(name) => format!("{}/{name}", e.pointer),
        None => e.pointer.clone(),
    }
}
