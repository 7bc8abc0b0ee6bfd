//! The record the matcher works on: every field normalised once, when the record is read, so
//! that comparing millions of pairs never re-parses a value. Invalid identifiers are flagged on
//! the record and left out of linking; the record itself is kept.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::normalise::{self, Dob, DobError, Name, Postcode, Sex};
use weft_ids::{NhsNumber, Upn};

/// What a column holds, as a column mapping names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The record's own id in its file or source; never compared.
    Id,
    GivenName,
    FamilyName,
    BirthDate,
    Sex,
    Postcode,
    HouseNumber,
    /// The street line of an address.
    Street,
    /// A second address line: a locality, an estate, a building.
    Locality,
    /// Town or suburb.
    Town,
    /// County or state.
    Region,
    NhsNumber,
    Upn,
    /// Any other identifier both sides share (a national insurance or social security number):
    /// compared with tolerance for a typo, because nothing checks it.
    OtherId,
}

impl Field {
    pub const ALL: [Field; 14] = [
        Field::Id,
        Field::GivenName,
        Field::FamilyName,
        Field::BirthDate,
        Field::Sex,
        Field::Postcode,
        Field::HouseNumber,
        Field::Street,
        Field::Locality,
        Field::Town,
        Field::Region,
        Field::NhsNumber,
        Field::Upn,
        Field::OtherId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::GivenName => "given_name",
            Field::FamilyName => "family_name",
            Field::BirthDate => "birth_date",
            Field::Sex => "sex",
            Field::Postcode => "postcode",
            Field::HouseNumber => "house_number",
            Field::Street => "street",
            Field::Locality => "locality",
            Field::Town => "town",
            Field::Region => "region",
            Field::NhsNumber => "nhs_number",
            Field::Upn => "upn",
            Field::OtherId => "other_id",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field `{0}`; expected one of id, given_name, family_name, birth_date, sex, postcode, house_number, street, locality, town, region, nhs_number, upn, other_id, middle_names, former_family_name, former_upn, former_postcode, household")]
pub struct UnknownField(pub String);

impl FromStr for Field {
    type Err = UnknownField;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Field::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownField(s.to_string()))
    }
}

/// What a source can say of a record beyond the [`Field`]s a matching file maps: kept on the
/// record for the rules that tell one child from a twin or a sibling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Extra {
    MiddleNames,
    FormerFamilyName,
    FormerUpn,
    FormerPostcode,
    /// A household key as the adapters spell it (`kind:value`).
    Household,
}

impl Extra {
    pub const ALL: [Extra; 5] = [
        Extra::MiddleNames,
        Extra::FormerFamilyName,
        Extra::FormerUpn,
        Extra::FormerPostcode,
        Extra::Household,
    ];

    /// The name a matching file's mapping gives it (`--map middle_names=COLUMN`).
    pub fn as_str(self) -> &'static str {
        match self {
            Extra::MiddleNames => "middle_names",
            Extra::FormerFamilyName => "former_family_name",
            Extra::FormerUpn => "former_upn",
            Extra::FormerPostcode => "former_postcode",
            Extra::Household => "household",
        }
    }
}

impl FromStr for Extra {
    type Err = UnknownField;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Extra::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownField(s.to_string()))
    }
}

/// Something wrong with one value of a record that the record is still kept with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    pub field: Field,
    pub problem: String,
}

/// A record, normalised. Every field is optional: missing is not disagreement.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub id: String,
    pub given: Option<Name>,
    pub family: Option<Name>,
    pub dob: Option<Dob>,
    pub sex: Option<Sex>,
    pub postcode: Option<Postcode>,
    pub house_number: Option<String>,
    pub street: Option<String>,
    pub locality: Option<String>,
    pub town: Option<String>,
    pub region: Option<String>,
    /// Verified only; an NHS number that fails its check is in `flags` instead.
    pub nhs_number: Option<NhsNumber>,
    /// Verified only, like the NHS number.
    pub upn: Option<Upn>,
    pub other_id: Option<String>,
    /// Values that failed their check and are ignored for linking.
    pub flags: Vec<Flag>,
    /// Middle names, where the source keeps them apart from the given name: a child is often
    /// known by one, so a given name agreeing with a middle name is not a disagreement.
    pub middle: Option<Name>,
    /// Family names the child was known by before (a parent's remarriage, an adoption).
    pub former_family: Vec<Name>,
    /// A former UPN, verified like the UPN; one failing its check is in `flags`.
    pub former_upn: Option<Upn>,
    /// Postcodes of earlier addresses, most recent first.
    pub former_postcodes: Vec<Postcode>,
    /// Household keys the source states (`uprn:…`, `phone:…`, `carer:…`, `family:…`), as
    /// the adapters spell them; see [`Record::households`] for every key including the address.
    pub household: Vec<String>,
}

/// Entries of a list (former family names, household keys, former postcodes) a
/// [`Record::form`] keeps, at most.
pub const FORM_LIST: usize = 8;

/// Bytes of a normalised street a [`Record::form`] keeps; a longer one (a whole address
/// written into one line) is left out rather than cut, since a cut street would disagree with
/// the same street written whole.
pub const FORM_STREET: usize = 96;

/// A value that cannot be read at all: the caller reports it with its line or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {source}")]
pub struct FieldError {
    pub field: Field,
    #[source]
    pub source: DobError,
}

impl Record {
    /// Sets one field from its raw text. A date of birth of an unknown shape is an error; an
    /// identifier that fails its check is flagged and the record kept.
    pub fn set(&mut self, field: Field, raw: &str) -> Result<(), FieldError> {
        let raw = raw.trim();
        match field {
            Field::Id => self.id = raw.to_string(),
            Field::GivenName => self.given = Name::parse(raw),
            Field::FamilyName => self.family = Name::parse(raw),
            Field::BirthDate => {
                self.dob = Dob::parse(raw).map_err(|source| FieldError { field, source })?;
                if self.dob.is_some_and(|d| !d.valid) {
                    self.flags.push(Flag {
                        field,
                        problem: "not a date in the calendar".into(),
                    });
                }
            }
            Field::Sex => self.sex = Sex::parse(raw),
            Field::Postcode => self.postcode = Postcode::parse(raw),
            Field::HouseNumber => self.house_number = normalise::text(raw),
            Field::Street => self.street = normalise::address(raw),
            Field::Locality => self.locality = normalise::address(raw),
            Field::Town => self.town = normalise::text(raw),
            Field::Region => self.region = normalise::text(raw),
            Field::NhsNumber if !raw.is_empty() => match NhsNumber::parse(raw) {
                Ok(n) => self.nhs_number = Some(n),
                Err(e) => self.flags.push(Flag {
                    field,
                    problem: e.to_string(),
                }),
            },
            Field::Upn if !raw.is_empty() => match Upn::parse(raw) {
                Ok(u) => self.upn = Some(u),
                Err(e) => self.flags.push(Flag {
                    field,
                    problem: e.to_string(),
                }),
            },
            Field::NhsNumber | Field::Upn => {}
            Field::OtherId => {
                let v: String = raw.chars().filter(|c| c.is_alphanumeric()).collect();
                self.other_id = (!v.is_empty()).then(|| v.to_uppercase());
            }
        }
        Ok(())
    }

    /// Builds a record from values as a source gave them. A value that cannot be read (a date
    /// of birth, an identifier failing its check) is flagged rather than refused: sources are
    /// not callers, and their records are never dropped.
    pub fn lenient<'a>(
        id: impl Into<String>,
        values: impl IntoIterator<Item = (Field, &'a str)>,
    ) -> Self {
        let mut r = Record {
            id: id.into(),
            ..Default::default()
        };
        for (field, v) in values {
            if let Err(e) = r.set(field, v) {
                r.flags.push(Flag {
                    field,
                    problem: e.source.to_string(),
                });
            }
        }
        r
    }

    /// The fields the master child index compares, already normalised, as one line of text
    /// stored beside each blocking key: a search reads a candidate's form with its key and
    /// rebuilds it with [`Record::from_form`], never re-reading or re-normalising the source's
    /// demographics. It holds everything scoring and the rules of [`crate::guard`] read — the
    /// compared fields, the identifiers, middle names, former family names, the house number
    /// and street, household keys — and the former UPN and postcodes, so a candidate rebuilt
    /// from its form is judged as its full record would be. Normalised names and streets hold
    /// only letters, digits and single spaces, and the other fields only letters and digits,
    /// so `|` cannot occur inside a field; lists are joined by `,` (names) or a space (keys,
    /// postcodes). The street comes last, so a form written before it was kept reads as a
    /// record without one. A household key spelt otherwise than the adapters spell them
    /// (`kind:value`, the value letters and digits) is left out of the form, as are list
    /// entries past [`FORM_LIST`] and a street longer than [`FORM_STREET`]: the form is stored
    /// in an index entry, whose size PostgreSQL bounds.
    pub fn form(&self) -> String {
        let name = |n: &Option<Name>| n.as_ref().map(|n| n.tokens.join(" ")).unwrap_or_default();
        let dob = self
            .dob
            .map(|d| d.digits().iter().map(|b| char::from(b'0' + b)).collect())
            .unwrap_or_default();
        let sex = match self.sex {
            Some(Sex::Female) => "f",
            Some(Sex::Male) => "m",
            Some(Sex::Other) => "x",
            None => "",
        };
        [
            name(&self.given),
            name(&self.family),
            dob,
            sex.to_string(),
            self.postcode
                .as_ref()
                .map(|p| p.compact().to_string())
                .unwrap_or_default(),
            self.nhs_number
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            self.upn.as_ref().map(|u| u.to_string()).unwrap_or_default(),
            name(&self.middle),
            self.former_family
                .iter()
                .take(FORM_LIST)
                .map(|n| n.tokens.join(" "))
                .collect::<Vec<_>>()
                .join(","),
            self.house_number.clone().unwrap_or_default(),
            self.household
                .iter()
                .filter(|k| k.contains(':') && k.chars().all(|c| c.is_alphanumeric() || c == ':'))
                .take(FORM_LIST)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            self.former_upn
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_default(),
            self.former_postcodes
                .iter()
                .take(FORM_LIST)
                .map(|p| p.compact())
                .collect::<Vec<_>>()
                .join(" "),
            self.street
                .clone()
                .filter(|s| s.len() <= FORM_STREET)
                .unwrap_or_default(),
        ]
        .join("|")
    }

    /// The record a [`Record::form`] was made from, as far as the index compares it. Every
    /// part is read with the parser that made it, so a form that is not one (an empty or
    /// damaged value) gives missing fields, which count neither for nor against a match.
    pub fn from_form(id: impl Into<String>, form: &str) -> Self {
        fn words(raw: &str) -> impl Iterator<Item = &str> {
            raw.split(' ').filter(|w| !w.is_empty())
        }
        let mut parts = form.split('|');
        let mut next = || parts.next().unwrap_or_default();
        let name = |raw: &str| {
            let tokens: Vec<String> = raw
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect();
            (!tokens.is_empty()).then(|| Name {
                joined: tokens.concat(),
                tokens,
            })
        };
        Record {
            id: id.into(),
            given: name(next()),
            family: name(next()),
            dob: Dob::parse(next()).ok().flatten(),
            sex: Sex::parse(next()),
            postcode: Postcode::parse(next()),
            nhs_number: NhsNumber::parse(next()).ok(),
            upn: Upn::parse(next()).ok(),
            middle: name(next()),
            former_family: next().split(',').filter_map(name).collect(),
            house_number: Some(next().to_string()).filter(|n| !n.is_empty()),
            household: words(next()).map(String::from).collect(),
            former_upn: Upn::parse(next()).ok(),
            former_postcodes: words(next()).filter_map(Postcode::parse).collect(),
            street: normalise::address(next()),
            ..Default::default()
        }
    }

    /// Sets a field that has no column of its own in a matching file (middle names, former
    /// family names, a former UPN, a former postcode, a household key), from a source's raw
    /// text. Lists grow with each call; a former UPN failing its check is flagged as a UPN.
    pub fn add_extra(&mut self, extra: Extra, raw: &str) {
        let raw = raw.trim();
        if raw.is_empty() {
            return;
        }
        match extra {
            Extra::MiddleNames => {
                self.middle = match (self.middle.take(), Name::parse(raw)) {
                    (Some(a), Some(b)) => {
                        Name::parse(&format!("{} {}", a.tokens.join(" "), b.tokens.join(" ")))
                    }
                    (a, b) => a.or(b),
                }
            }
            Extra::FormerFamilyName => {
                if let Some(n) = Name::parse(raw) {
                    if !self.former_family.contains(&n) && self.family.as_ref() != Some(&n) {
                        self.former_family.push(n);
                    }
                }
            }
            Extra::FormerUpn => match Upn::parse(raw) {
                Ok(u) if self.upn.as_ref() != Some(&u) => self.former_upn = Some(u),
                Ok(_) => {}
                Err(e) => self.flags.push(Flag {
                    field: Field::Upn,
                    problem: format!("former UPN: {e}"),
                }),
            },
            Extra::FormerPostcode => {
                if let Some(p) = Postcode::parse(raw) {
                    if !self.former_postcodes.contains(&p) && self.postcode.as_ref() != Some(&p) {
                        self.former_postcodes.push(p);
                    }
                }
            }
            Extra::Household => {
                if !self.household.iter().any(|h| h == raw) {
                    self.household.push(raw.to_string());
                }
            }
        }
    }

    /// This record read as another record of the same child: where it says nothing of the
    /// child's middle names, `other`'s, and `other`'s former family names added to its own. What
    /// one agency recorded of a child's names holds for the child in every agency's records; a
    /// record that leaves a name out does not contradict it.
    pub fn with_history_of(&self, other: &Record) -> Record {
        let mut r = self.clone();
        if r.middle.is_none() {
            r.middle = other.middle.clone();
        }
        for n in &other.former_family {
            if !r.former_family.contains(n) && r.family.as_ref() != Some(n) {
                r.former_family.push(n.clone());
            }
        }
        r
    }

    /// Sets the house number and street from address lines as a source wrote them (`12 High
    /// Street`, or `12` then `High Street` as the CTF's PAON and Street): the first line that
    /// starts with a number gives both. Lines without a number (a building name, a town) give
    /// neither; nothing already set is overwritten.
    pub fn set_address_lines<'a>(&mut self, lines: impl IntoIterator<Item = &'a str>) {
        let lines: Vec<&str> = lines
            .into_iter()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        for (i, line) in lines.iter().enumerate() {
            // `Flat 2, 5 High Street` keeps its house number after the comma.
            let part = line
                .rsplit(',')
                .map(str::trim)
                .find(|p| p.starts_with(|c: char| c.is_ascii_digit()));
            let Some(part) = part else { continue };
            let (number, rest) = part.split_once(char::is_whitespace).unwrap_or((part, ""));
            let street = if rest.trim().is_empty() {
                lines.get(i + 1).copied().unwrap_or("")
            } else {
                rest
            };
            if self.house_number.is_none() {
                self.house_number = normalise::text(number);
            }
            if self.street.is_none() {
                self.street = normalise::address(street);
            }
            return;
        }
    }

    /// Every household key of the record: those its source states, and the address as postcode
    /// and house number (`address:<postcode>:<number>`) when both are known. Two records sharing
    /// any key live, or lived, in one household.
    pub fn households(&self) -> Vec<String> {
        let mut keys = self.household.clone();
        if let (Some(p), Some(n)) = (&self.postcode, &self.house_number) {
            let number: String = n.chars().filter(|c| c.is_alphanumeric()).collect();
            if !number.is_empty() {
                keys.push(format!("address:{}:{}", p.compact(), number.to_uppercase()));
            }
        }
        keys
    }

    /// Whether two records share a household key (see [`Record::households`]).
    pub fn same_household(&self, other: &Record) -> bool {
        let theirs = other.households();
        self.households().iter().any(|k| theirs.contains(k))
    }

    /// Whether the record has a usable value for a field.
    pub fn has(&self, field: Field) -> bool {
        match field {
            Field::Id => !self.id.is_empty(),
            Field::GivenName => self.given.is_some(),
            Field::FamilyName => self.family.is_some(),
            Field::BirthDate => self.dob.is_some(),
            Field::Sex => self.sex.is_some(),
            Field::Postcode => self.postcode.is_some(),
            Field::HouseNumber => self.house_number.is_some(),
            Field::Street => self.street.is_some(),
            Field::Locality => self.locality.is_some(),
            Field::Town => self.town.is_some(),
            Field::Region => self.region.is_some(),
            Field::NhsNumber => self.nhs_number.is_some(),
            Field::Upn => self.upn.is_some(),
            Field::OtherId => self.other_id.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_their_names() {
        for f in Field::ALL {
            assert_eq!(f.as_str().parse::<Field>(), Ok(f));
        }
        assert!("surname".parse::<Field>().is_err());
    }

    #[test]
    fn invalid_identifiers_are_flagged_not_used() {
        let mut r = Record::default();
        r.set(Field::NhsNumber, "9000000015").unwrap();
        r.set(Field::Upn, "B801200005001").unwrap();
        assert!(r.nhs_number.is_none());
        assert_eq!(r.flags.len(), 1);
        assert_eq!(r.flags[0].field, Field::NhsNumber);
        assert!(r.upn.is_some());
    }

    #[test]
    fn impossible_dates_are_kept_and_flagged() {
        let mut r = Record::default();
        r.set(Field::BirthDate, "19561331").unwrap();
        assert!(r.dob.is_some());
        assert_eq!(r.flags.len(), 1);
        assert!(r.set(Field::BirthDate, "13th March").is_err());
    }

    #[test]
    fn a_form_gives_back_what_the_index_compares() {
        let r = Record::lenient(
            "x",
            [
                (Field::GivenName, "Mary-Jane  Ö'Neil"),
                (Field::FamilyName, "Mc Donald"),
                (Field::BirthDate, "31/02/2014"),
                (Field::Sex, "2"),
                (Field::Postcode, "sw1a 1aa"),
                (Field::NhsNumber, "943 476 5919"),
                (Field::Upn, "A801200005001"),
            ],
        );
        let back = Record::from_form("y", &r.form());
        assert_eq!(back.id, "y");
        assert_eq!(
            (
                &back.given,
                &back.family,
                &back.dob,
                &back.sex,
                &back.postcode
            ),
            (&r.given, &r.family, &r.dob, &r.sex, &r.postcode)
        );
        assert_eq!((&back.nhs_number, &back.upn), (&r.nhs_number, &r.upn));
        assert!(
            back.dob.is_some_and(|d| !d.valid),
            "an impossible date stays one"
        );

        let empty = Record::lenient("e", []);
        assert_eq!(empty.form(), "|||||||||||||");
        let back = Record::from_form("e", &empty.form());
        assert!(Field::ALL.iter().all(|&f| f == Field::Id || !back.has(f)));
        let damaged = Record::from_form("d", "amy|");
        assert_eq!(damaged.given.map(|n| n.joined).as_deref(), Some("amy"));
        assert!(damaged.family.is_none() && damaged.dob.is_none());
    }

    #[test]
    fn a_form_keeps_what_the_rules_read() {
        let mut r = Record::lenient(
            "x",
            [
                (Field::GivenName, "Amy"),
                (Field::FamilyName, "Bloggs"),
                (Field::BirthDate, "2014-03-02"),
                (Field::Sex, "F"),
                (Field::Postcode, "LS1 6AE"),
            ],
        );
        r.add_extra(Extra::MiddleNames, "Rose Mary");
        r.add_extra(Extra::FormerFamilyName, "Smith");
        r.add_extra(Extra::FormerFamilyName, "Van der Berg");
        r.add_extra(Extra::FormerUpn, "B801200005001");
        r.add_extra(Extra::FormerPostcode, "bs1 4aa");
        r.add_extra(Extra::Household, "uprn:100023336956");
        r.add_extra(Extra::Household, "carer:M|17");
        r.set_address_lines(["12a High Street"]);
        let back = Record::from_form("y", &r.form());
        assert_eq!(back.middle, r.middle);
        assert_eq!(back.former_family, r.former_family);
        assert_eq!(back.former_upn, r.former_upn);
        assert_eq!(back.former_postcodes, r.former_postcodes);
        assert_eq!(back.house_number.as_deref(), Some("12a"));
        assert_eq!(back.street.as_deref(), Some("high street"));
        assert_eq!(
            back.household,
            vec!["uprn:100023336956".to_string()],
            "a key that could break the form is left out"
        );
        assert_eq!(
            back.households(),
            r.households()[..1]
                .iter()
                .chain(&r.households()[2..])
                .cloned()
                .collect::<Vec<_>>()
        );
        assert_eq!(back.form(), Record::from_form("z", &back.form()).form());
        // A form written before the extras were kept reads as a record without them.
        let old = Record::from_form("o", "amy|bloggs|20140302|f|LS16AE||");
        assert!(old.middle.is_none() && old.former_family.is_empty() && old.household.is_empty());
        assert_eq!(old.given.map(|n| n.joined).as_deref(), Some("amy"));
        // Lists and the street are bounded, so a form fits an index entry.
        let mut long = Record::default();
        long.set_address_lines([format!("1 {}", "Long Lane ".repeat(20)).as_str()]);
        assert!(long.street.is_some());
        assert!(Record::from_form("l", &long.form()).street.is_none());
        let mut many = Record::default();
        for i in 0..20 {
            many.add_extra(Extra::Household, &format!("phone:0770090{i:04}"));
        }
        assert_eq!(
            Record::from_form("m", &many.form()).household.len(),
            FORM_LIST
        );
    }

    #[test]
    fn extras_are_kept_apart_and_checked() {
        let mut r = Record::lenient(
            "x",
            [(Field::FamilyName, "Smith"), (Field::Postcode, "ls1 6ae")],
        );
        r.add_extra(Extra::MiddleNames, "Rose");
        r.add_extra(Extra::MiddleNames, "Mary");
        r.add_extra(Extra::FormerFamilyName, "Jones");
        r.add_extra(Extra::FormerFamilyName, "SMITH");
        r.add_extra(Extra::FormerFamilyName, "jones");
        r.add_extra(Extra::FormerUpn, "B801200005001");
        r.add_extra(Extra::FormerUpn, "not a upn");
        r.add_extra(Extra::FormerPostcode, "LS1 6AE");
        r.add_extra(Extra::FormerPostcode, "bs1 4aa");
        r.add_extra(Extra::Household, "uprn:123456789012");
        r.add_extra(Extra::Household, " ");
        assert_eq!(
            r.middle.as_ref().map(|n| n.tokens.join(" ")).as_deref(),
            Some("rose mary")
        );
        assert_eq!(
            r.former_family.len(),
            1,
            "the current name and repeats are not former names"
        );
        assert_eq!(
            r.former_upn.as_ref().map(|u| u.to_string()).as_deref(),
            Some("B801200005001")
        );
        assert_eq!(r.flags.len(), 1);
        assert_eq!(r.flags[0].field, Field::Upn);
        assert_eq!(r.former_postcodes.len(), 1);
        assert_eq!(r.former_postcodes[0].compact(), "BS14AA");
        assert_eq!(r.household, vec!["uprn:123456789012".to_string()]);
        // A former UPN that is the current one says nothing new.
        let mut same = Record::lenient("y", [(Field::Upn, "B801200005001")]);
        same.add_extra(Extra::FormerUpn, "B801200005001");
        assert!(same.upn.is_some() && same.former_upn.is_none());
    }

    #[test]
    fn address_lines_give_house_number_and_street_and_a_household() {
        let cases: [(&[&str], Option<&str>, Option<&str>); 5] = [
            (
                &["1 Trevelyan Square", "Boar Lane", "Leeds"],
                Some("1"),
                Some("trevelyan square"),
            ),
            (
                &["12", "High St", "Bristol"],
                Some("12"),
                Some("high street"),
            ),
            (&["Flat 2, 5a Mill Road"], Some("5a"), Some("mill road")),
            (&["Rose Cottage", "7 Lane End"], Some("7"), Some("lane end")),
            (&["Rose Cottage", "Leeds"], None, None),
        ];
        for (lines, number, street) in cases {
            let mut r = Record::default();
            r.set_address_lines(lines.iter().copied());
            assert_eq!(r.house_number.as_deref(), number, "{lines:?}");
            assert_eq!(r.street.as_deref(), street, "{lines:?}");
        }
        let at = |lines: &[&str], postcode: &str| {
            let mut r = Record::lenient("r", [(Field::Postcode, postcode)]);
            r.set_address_lines(lines.iter().copied());
            r
        };
        let a = at(&["12 High Street"], "BS1 4AA");
        let twin = at(&["12", "High St"], "bs14aa");
        let neighbour = at(&["14 High Street"], "BS1 4AA");
        assert!(a.same_household(&twin));
        assert!(!a.same_household(&neighbour));
        assert_eq!(a.households(), vec!["address:BS14AA:12".to_string()]);
        let mut carer = neighbour.clone();
        carer.add_extra(Extra::Household, "phone:07700900000");
        let mut other = Record::default();
        other.add_extra(Extra::Household, "phone:07700900000");
        assert!(carer.same_household(&other));
        assert!(!Record::default().same_household(&Record::default()));
    }

    #[test]
    fn lenient_never_refuses() {
        let r = Record::lenient(
            "x",
            [
                (Field::GivenName, "Amy"),
                (Field::BirthDate, "garbage"),
                (Field::NhsNumber, "9000000009"),
            ],
        );
        assert!(r.given.is_some() && r.dob.is_none() && r.nhs_number.is_some());
        assert_eq!(r.flags.len(), 1);
    }
}
