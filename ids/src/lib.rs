//! Identifiers that validate on construction, as DESIGN.md specifies them. Code that holds an
//! [`NhsNumber`] or a [`Upn`] never checks it again; a value that fails is flagged on its record
//! and never used for linking, but the record itself is kept.

use std::fmt;

use serde::{Serialize, Serializer};

/// Why an identifier was rejected; shown to callers, so it never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("must be {0}")]
    Shape(&'static str),
    #[error("check character does not match")]
    Check,
}

/// A 10-digit NHS number whose modulus-11 check digit is right.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber(String);

impl NhsNumber {
    /// Accepts the 10 digits with or without the usual `3 3 4` spacing.
    pub fn parse(raw: &str) -> Result<Self, IdentifierError> {
        let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        let shape = IdentifierError::Shape("10 digits");
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape);
        }
        let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(v, w)| v * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => return Err(IdentifierError::Check),
            c => c,
        };
        if check == d[9] {
            Ok(Self(digits))
        } else {
            Err(IdentifierError::Check)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Letters a UPN may use: no I, O or S, which read as digits.
const UPN_ALPHABET: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

/// A unique pupil number, permanent (`A` + 12 digits) or temporary (last character a letter),
/// whose check letter is right.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Upn(String);

impl Upn {
    pub fn parse(raw: &str) -> Result<Self, IdentifierError> {
        let upn = raw.trim().to_ascii_uppercase();
        let b = upn.as_bytes();
        let shape = IdentifierError::Shape("a letter, 11 digits, then a digit or letter");
        if b.len() != 13 || !b[1..12].iter().all(u8::is_ascii_digit) {
            return Err(shape);
        }
        let index = |c: u8| UPN_ALPHABET.iter().position(|&a| a == c);
        let last = if b[12].is_ascii_digit() {
            u32::from(b[12] - b'0')
        } else {
            index(b[12]).ok_or(shape.clone())? as u32
        };
        let check = index(b[0]).ok_or(shape)?;
        let sum: u32 = b[1..12]
            .iter()
            .zip(2u32..)
            .map(|(c, p)| u32::from(c - b'0') * p)
            .sum::<u32>()
            + last * 13;
        if (sum % 23) as usize == check {
            Ok(Self(upn))
        } else {
            Err(IdentifierError::Check)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the UPN is a temporary one, issued until the permanent number is known.
    pub fn is_temporary(&self) -> bool {
        self.0.as_bytes()[12].is_ascii_alphabetic()
    }
}

macro_rules! display_and_serialize {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    )*};
}
display_and_serialize!(NhsNumber, Upn);

/// Checks an identifier of a kind the index knows how to verify. Source-scoped kinds (a local
/// id, a police person id) have no check and are always usable within their source.
pub fn verify(kind: &str, value: &str) -> Result<String, IdentifierError> {
    match kind {
        "nhs_number" => NhsNumber::parse(value).map(|n| n.0),
        "upn" => Upn::parse(value).map(|u| u.0),
        _ if value.trim().is_empty() => Err(IdentifierError::Shape("not empty")),
        _ => Ok(value.trim().to_string()),
    }
}

/// Whether an identifier kind is national (shared across agencies) rather than source-scoped.
pub fn is_national(kind: &str) -> bool {
    matches!(kind, "nhs_number" | "upn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_from_design() {
        for ok in ["9000000009", "9912003888", "9691292211", "969 129 2211"] {
            assert!(NhsNumber::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["9000000015", "9912003890"] {
            assert_eq!(NhsNumber::parse(bad), Err(IdentifierError::Check), "{bad}");
        }
        for bad in ["", "900000000", "90000000091", "900000000X"] {
            assert!(matches!(
                NhsNumber::parse(bad),
                Err(IdentifierError::Shape(_))
            ));
        }
    }

    #[test]
    fn nhs_check_of_ten_is_invalid() {
        // Weights 10..2 on 000000001 sum to 2 -> 11 - 2 = 9; find a prefix whose check is 10:
        // sum mod 11 == 1, e.g. 100000000 (10*1 = 10 -> 10 mod 11 = 10 -> check 1). Search.
        let prefix = (0..1_000_000_000u64)
            .step_by(7919)
            .map(|n| format!("{n:09}"))
            .find(|p| {
                let s: u32 = p
                    .bytes()
                    .zip((2..=10).rev())
                    .map(|(b, w)| u32::from(b - b'0') * w)
                    .sum();
                11 - s % 11 == 10
            })
            .expect("some prefix has check 10");
        for last in 0..=9 {
            assert!(NhsNumber::parse(&format!("{prefix}{last}")).is_err());
        }
    }

    #[test]
    fn upns_from_design() {
        for ok in ["B801200005001", "P207000016049", "b801200005001"] {
            assert!(Upn::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["A801200005001", "Q207000016049"] {
            assert_eq!(Upn::parse(bad), Err(IdentifierError::Check), "{bad}");
        }
        assert!(matches!(
            Upn::parse("B80120000500"),
            Err(IdentifierError::Shape(_))
        ));
        assert!(matches!(
            Upn::parse("I801200005001"),
            Err(IdentifierError::Shape(_))
        ));
    }

    #[test]
    fn temporary_upn_check_uses_letter_index() {
        // Build a temporary UPN and its check letter from the rule, then parse it.
        let body = b"80120000500";
        let last = b'Z';
        let li = UPN_ALPHABET.iter().position(|&a| a == last).unwrap() as u32;
        let sum: u32 = body
            .iter()
            .zip(2u32..)
            .map(|(c, p)| u32::from(c - b'0') * p)
            .sum::<u32>()
            + li * 13;
        let check = UPN_ALPHABET[(sum % 23) as usize] as char;
        let upn = format!("{check}{}Z", std::str::from_utf8(body).unwrap());
        let parsed = Upn::parse(&upn).expect("valid temporary UPN");
        assert!(parsed.is_temporary());
    }

    #[test]
    fn verify_scoped_identifiers() {
        assert_eq!(verify("police_person_id", " P-1 ").unwrap(), "P-1");
        assert!(verify("police_person_id", "  ").is_err());
        assert!(verify("nhs_number", "9000000015").is_err());
    }
}
