//! The codes and spellings that drift between versions of the DfE returns and between MIS
//! vendors, each read into one canonical form. A value none of the known spellings covers is an
//! error, never a guess: a wrong sex or date would link the wrong child. The error is a fixed
//! text saying what was expected, never the value: it is logged and stored with the import run.

use chrono::NaiveDate;

/// A date as ISO `YYYY-MM-DD`, from ISO (the CIN census, CTF), `DD/MM/YYYY` (SSDA903, most MIS
/// exports) or an ISO date-time whose date part is kept.
pub fn date(raw: &str) -> Result<String, &'static str> {
    let s = raw.trim();
    let iso = s
        .get(..10)
        .filter(|_| s.len() == 10 || s.as_bytes().get(10) == Some(&b'T'));
    let parsed = match iso {
        Some(d) if d.as_bytes().get(4) == Some(&b'-') => NaiveDate::parse_from_str(d, "%Y-%m-%d"),
        _ => NaiveDate::parse_from_str(s, "%d/%m/%Y"),
    };
    parsed
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| "not a date (expected YYYY-MM-DD or DD/MM/YYYY)")
}

/// Sex or gender as FHIR `gender` codes, which every other adapter uses, so that a coding
/// difference never shows as a disagreement between sources.
///
/// CIN census `GenderCurrent` (before 2024) and SSDA903 `SEX`: 1 male, 2 female, 0 not known,
/// 9 not specified. CIN 2024+ `Sex`, CTF `Sex`/`Gender` and MIS exports: `M`, `F`, `U`, and
/// sometimes the numeric codes or words.
pub fn sex(raw: &str) -> Result<&'static str, &'static str> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "m" | "male" => Ok("male"),
        "2" | "f" | "female" => Ok("female"),
        "0" | "u" | "unknown" | "not known" => Ok("unknown"),
        "9" | "x" | "other" | "not specified" | "indeterminate" => Ok("other"),
        _ => Err("not a sex code (1/2/0/9 or M/F/U)"),
    }
}

/// A boolean in any of the spellings the returns use.
pub fn boolean(raw: &str) -> Result<bool, &'static str> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "y" | "yes" => Ok(true),
        "false" | "0" | "n" | "no" => Ok(false),
        _ => Err("not a boolean (true/false, 1/0, Y/N)"),
    }
}

/// An exclusion category as the other sources name it. `FIXD` (fixed period) became `SUSP`
/// (suspension) in 2021; both mean the same thing.
pub fn exclusion_kind(raw: &str) -> Result<&'static str, &'static str> {
    match raw.trim().to_ascii_uppercase().as_str() {
        "FIXD" | "SUSP" | "FIXED" | "SUSPENSION" => Ok("suspension"),
        "PERM" | "PERMANENT" => Ok("permanent"),
        "LNCH" | "LUNCHTIME" => Ok("lunchtime"),
        _ => Err("not an exclusion category (SUSP/FIXD/PERM/LNCH)"),
    }
}

/// A whole number of sessions or days; a decimal such as `2.5` days is kept as written.
pub fn number(raw: &str) -> Result<serde_json::Value, &'static str> {
    let s = raw.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n.into());
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .ok_or("not a number")
}

/// A count of sessions: a whole number, not negative.
pub fn sessions(raw: &str) -> Result<i64, &'static str> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or("not a number of sessions")
}

/// SEN provision codes as words; an unknown code is passed through as written.
pub fn sen_provision(raw: &str) -> String {
    match raw.trim().to_ascii_uppercase().as_str() {
        "N" => "none".into(),
        "K" => "SEN support".into(),
        "E" | "S" => "EHC plan".into(),
        "A" | "P" => "school action".into(),
        _ => raw.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_every_spelling() {
        assert_eq!(date("2015-03-27").unwrap(), "2015-03-27");
        assert_eq!(date("27/03/2015").unwrap(), "2015-03-27");
        assert_eq!(date("7/3/2015").unwrap(), "2015-03-07");
        assert_eq!(date("2022-07-21T10:12:28Z").unwrap(), "2022-07-21");
        assert!(date("31/02/2015").is_err());
        assert!(date("2015-13-01").is_err());
        assert!(date("yesterday").is_err());
    }

    #[test]
    fn sex_codes_across_versions() {
        for (raw, want) in [
            ("1", "male"),
            ("M", "male"),
            ("2", "female"),
            ("f", "female"),
            ("0", "unknown"),
            ("U", "unknown"),
            ("9", "other"),
        ] {
            assert_eq!(sex(raw).unwrap(), want, "{raw}");
        }
        assert!(sex("3").is_err());
    }

    #[test]
    fn booleans_and_exclusions() {
        for t in ["true", "TRUE", "1", "Y"] {
            assert!(boolean(t).unwrap());
        }
        for f in ["false", "FALSE", "0", "n"] {
            assert!(!boolean(f).unwrap());
        }
        assert!(boolean("maybe").is_err());
        assert_eq!(exclusion_kind("FIXD").unwrap(), "suspension");
        assert_eq!(exclusion_kind("susp").unwrap(), "suspension");
        assert_eq!(exclusion_kind("PERM").unwrap(), "permanent");
        assert!(exclusion_kind("OTHER").is_err());
    }
}
