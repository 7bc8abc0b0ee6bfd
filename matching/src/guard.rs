//! Rules the model's weights cannot outvote. Fellegi–Sunter adds up independent pieces of
//! evidence, and twins break that independence: a twin shares a date of birth, a family name,
//! an address, a GP and a school with the other twin, so everything but the given name (and
//! often the sex) agrees, and the sum says "same child". These rules look at the pair as a
//! whole and hold it back from an automatic link, whatever its probability:
//!
//! - two different verified NHS numbers, or two different verified UPNs: two children;
//! - the same date of birth, or one slip of it (day and month swapped, one digit), and
//!   household (the same address, or postcode and house number, or a shared household key
//!   where a source records a parent or carer) — or the same family name — with given names
//!   that are not the same name, a nickname, a middle name or a typo of each other: twins or
//!   siblings, never linked; when the given names are only similar (or one is an initial), a
//!   person is asked;
//! - the same household or family name with given names and dates of birth both different
//!   (not a mis-keyed date): brothers or sisters, never linked; when the given names are
//!   alike but not the same (a nickname, a middle name, a close spelling), a person is asked;
//! - given name and sex both different: never linked without a person.
//!
//! The twin rule runs where records carry sex (children's registers always do: the gateway's
//! index always runs it). Without sex, a twin and a record whose given name was replaced by a
//! clerk or a corruption look exactly alike, and a file that records no sex (a general adult
//! register, the FEBRL benchmarks) is one where the second is far commoner than the first;
//! there a different given name is weighed by the model like any other disagreement.
//!
//! Clustering treats a guarded pair as two children who may not share a cluster, so a chain
//! of plausible links cannot join them either.

use serde::Serialize;

use crate::compare::Comparison;
use crate::record::Record;

/// Why a pair is held back, and how far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "hold", content = "reason", rename_all = "snake_case")]
pub enum Guard {
    /// Confidently two people: never linked, never clustered together, not proposed.
    Apart(&'static str),
    /// Could be one person, but only a person may say so: proposed for review at most.
    Review(&'static str),
}

impl Guard {
    pub fn reason(self) -> &'static str {
        match self {
            Guard::Apart(r) | Guard::Review(r) => r,
        }
    }

    pub fn is_apart(self) -> bool {
        matches!(self, Guard::Apart(_))
    }
}

pub const DIFFERENT_NHS: &str = "different verified NHS numbers";
pub const DIFFERENT_UPN: &str = "different verified UPNs";
pub const TWINS: &str =
    "same date of birth (or one slip of it) and household or family name, different given names: twins";
pub const MAYBE_TWINS: &str =
    "same date of birth (or one slip of it) and household or family name, given names only similar: could be twins";
pub const SIBLINGS: &str =
    "same household or family name, different given names and dates of birth: brothers or sisters";
pub const SIBLINGS_ALIKE: &str =
    "same household or family name, dates of birth far apart, given names only alike: could be brothers or sisters";
pub const NAME_AND_SEX: &str = "given name and sex both different";

/// Given-name levels (see [`Comparison::levels`]): exact…
const EXACT_NAME: u8 = 0;
/// …other name or nickname, close typo.
const SAME_NAME: u8 = 2;
/// Similar spelling or an initial.
const SIMILAR_NAME: u8 = 3;
/// Swapped with the family name: a data-entry slip, not another child.
const SWAPPED_NAME: u8 = 4;
/// Dates of birth that are not one date mis-keyed (the last level of [`Comparison::BirthDate`]).
const DIFFERENT_DOB: u8 = 4;
/// One digit different or two transposed: the last level that is one slip of one date.
const ONE_SLIP_DOB: u8 = 2;

/// Whether two records share a household: a household key both state (a UPRN, a carer, a
/// phone, a family reference, or postcode and house number; see [`Record::households`]), or the
/// same postcode where either lacks a house number.
pub fn same_household(a: &Record, b: &Record) -> bool {
    if a.same_household(b) {
        return true;
    }
    let postcode = matches!((&a.postcode, &b.postcode), (Some(x), Some(y)) if x == y);
    let house = match (&a.house_number, &b.house_number) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    postcode && house
}

/// Whether one given name is a slip of the other (one character added, dropped, changed or
/// two swapped: "Aria"/"Arda", "Isla"/"Islp", which Jaro–Winkler scores low on short names) or
/// a short form that begins it ("Flo"/"Florence", "Alex"/"Alexandra"): not a sign of another
/// child, so the model, not a rule, weighs it.
fn short_form_or_slip(a: &Record, b: &Record) -> bool {
    let (Some(x), Some(y)) = (&a.given, &b.given) else {
        return false;
    };
    x.tokens.iter().any(|p| {
        y.tokens.iter().any(|q| {
            let (short, long) = if p.len() <= q.len() { (p, q) } else { (q, p) };
            crate::normalise::within_one_edit(p.as_bytes(), q.as_bytes())
                || (short.len() >= 3 && long.starts_with(short.as_str()))
        })
    })
}

/// The rule that holds a pair back, if one does; `twins` turns the twin rule on (see the
/// module's documentation for when it is off).
pub fn guard(a: &Record, b: &Record, twins: bool) -> Option<Guard> {
    if matches!((&a.nhs_number, &b.nhs_number), (Some(x), Some(y)) if x != y) {
        return Some(Guard::Apart(DIFFERENT_NHS));
    }
    if matches!((&a.upn, &b.upn), (Some(x), Some(y)) if x != y) {
        return Some(Guard::Apart(DIFFERENT_UPN));
    }
    let shared = |x: Option<&str>, y: Option<&str>| matches!((x, y), (Some(x), Some(y)) if x == y);
    if !twins
        || shared(
            a.nhs_number.as_ref().map(|n| n.as_str()),
            b.nhs_number.as_ref().map(|n| n.as_str()),
        )
        || shared(
            a.upn.as_ref().map(|u| u.as_str()),
            b.upn.as_ref().map(|u| u.as_str()),
        )
    {
        // A shared verified identifier says which child it is; the rules below only stop
        // the weights from saying it without one.
        return None;
    }
    let given = Comparison::GivenName.compare(a, b)?;
    if given == SWAPPED_NAME {
        return None;
    }
    let dob = Comparison::BirthDate.compare(a, b);
    let family = Comparison::FamilyName.compare(a, b).is_some_and(|l| l <= 1);
    let dob_differs = dob == Some(DIFFERENT_DOB);
    if given != EXACT_NAME && dob_differs && (family || same_household(a, b)) {
        // Brothers and sisters are often given names a nickname table or a spelling relates
        // (Amelia and Millie; Mila and Mia), and they share the household's evidence; with the
        // birthdays far apart too, one child would need two slips at once. A person decides.
        return Some(if given <= SIMILAR_NAME || short_form_or_slip(a, b) {
            Guard::Review(SIBLINGS_ALIKE)
        } else {
            Guard::Apart(SIBLINGS)
        });
    }
    if given <= SAME_NAME || short_form_or_slip(a, b) {
        return None;
    }
    let sex_differs = matches!((a.sex, b.sex), (Some(x), Some(y)) if x != y);
    // The same date, or one slip of it (day and month swapped, one digit): a twin's record
    // with its date mis-keyed is still a twin's, and with a different given name it is far
    // likelier than one child whose name and date were both mistyped.
    let near_dob = dob.is_some_and(|l| l <= ONE_SLIP_DOB);
    if near_dob && (family || same_household(a, b)) {
        return Some(if given == SIMILAR_NAME && !sex_differs {
            Guard::Review(MAYBE_TWINS)
        } else {
            Guard::Apart(TWINS)
        });
    }
    if sex_differs && given > SIMILAR_NAME {
        return Some(Guard::Review(NAME_AND_SEX));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    fn guard_(a: &Record, b: &Record) -> Option<Guard> {
        guard(a, b, true)
    }

    fn rec(given: &str, family: &str, dob: &str, sex: &str, postcode: &str) -> Record {
        Record::lenient(
            "x",
            [
                (Field::GivenName, given),
                (Field::FamilyName, family),
                (Field::BirthDate, dob),
                (Field::Sex, sex),
                (Field::Postcode, postcode),
            ],
        )
    }

    #[test]
    fn twins_are_apart_and_the_same_child_is_not() {
        let ruby = rec("Ruby", "Calder", "2014-03-02", "F", "WT1 1AA");
        let oliver = rec("Oliver", "Calder", "2014-03-02", "M", "WT1 1AA");
        let rosie = rec("Rosie", "Calder", "2014-03-02", "F", "WT1 1AA");
        assert_eq!(guard_(&ruby, &oliver), Some(Guard::Apart(TWINS)));
        assert_eq!(guard_(&ruby, &rosie), Some(Guard::Apart(TWINS)));
        // Moved house, same family name: still twins.
        let moved = rec("Oliver", "Calder", "2014-03-02", "M", "LS2 9ZZ");
        assert_eq!(guard_(&ruby, &moved), Some(Guard::Apart(TWINS)));
        // The same child: typo, nickname, a second forename.
        for same in ["Rubby", "Ruby May", "ruby"] {
            assert_eq!(
                guard_(&ruby, &rec(same, "Calder", "2014-03-02", "F", "WT1 1AA")),
                None,
                "{same}"
            );
        }
        let will = rec("William", "Khan", "2010-01-01", "M", "WT2 2BB");
        assert_eq!(
            guard_(&will, &rec("Bill", "Khan", "2010-01-01", "M", "WT2 2BB")),
            None
        );
        // Only similar names: a person decides.
        let ella = rec("Ella", "Khan", "2010-01-01", "F", "WT2 2BB");
        assert_eq!(
            guard_(&ella, &rec("Ellie", "Khan", "2010-01-01", "F", "WT2 2BB")),
            None,
            "Ella/Ellie is a close spelling"
        );
        let j = rec("E", "Khan", "2010-01-01", "F", "WT2 2BB");
        assert_eq!(guard_(&ella, &j), Some(Guard::Review(MAYBE_TWINS)));
        // Slips and short forms are the model's to weigh, not twins.
        for same in ["Rubi", "Rub", "Rubyy"] {
            assert_eq!(
                guard_(&ruby, &rec(same, "Calder", "2014-03-02", "F", "WT1 1AA")),
                None,
                "{same}"
            );
        }
        let florence = rec("Florence", "Khan", "2010-01-01", "F", "WT2 2BB");
        assert_eq!(
            guard_(&florence, &rec("Flo", "Khan", "2010-01-01", "F", "WT2 2BB")),
            None
        );
        // A shared verified NHS number says which child it is.
        let mut a = ruby.clone();
        let mut b = oliver.clone();
        a.set(Field::NhsNumber, "9434765919").unwrap();
        b.set(Field::NhsNumber, "943 476 5919").unwrap();
        assert_eq!(guard_(&a, &b), None);
    }

    #[test]
    fn identifiers_and_name_with_sex() {
        let mut a = rec("Amy", "Khan", "2012-01-01", "F", "");
        let mut b = rec("Amy", "Khan", "2012-01-01", "F", "");
        a.set(Field::NhsNumber, "9434765919").unwrap();
        b.set(Field::NhsNumber, "9000000009").unwrap();
        assert_eq!(guard_(&a, &b), Some(Guard::Apart(DIFFERENT_NHS)));
        let girl = rec("Ruby", "Calder", "2014-03-02", "F", "WT1 1AA");
        let boy = rec("Oliver", "Baker", "2013-07-09", "M", "WT9 9XX");
        assert_eq!(guard_(&girl, &boy), Some(Guard::Review(NAME_AND_SEX)));
        // Brothers: same home, other names and birthdays.
        let brother = rec("Oliver", "Calder", "2011-09-30", "M", "WT1 1AA");
        let sister = rec("Ruby", "Calder", "2014-03-02", "F", "WT1 1AA");
        assert_eq!(guard_(&sister, &brother), Some(Guard::Apart(SIBLINGS)));
        let sister2 = rec("Amy", "Calder", "2016-11-12", "F", "WT1 1AA");
        assert_eq!(guard_(&sister, &sister2), Some(Guard::Apart(SIBLINGS)));
        // Twins, one of whose records has the date of birth keyed a year out: still twins.
        let twin = rec("Sienna", "Calder", "2014-03-02", "F", "WT1 1AA");
        let slipped = rec("Olivia", "Calder", "2015-03-02", "F", "WT1 1AA");
        assert_eq!(guard_(&twin, &slipped), Some(Guard::Apart(TWINS)));
        // Brothers and sisters whose names the nickname table or a spelling relates, born
        // years apart: a person decides.
        let amelia = rec("Amelia", "Calder", "2009-05-01", "F", "WT1 1AA");
        let mia = rec("Mia", "Calder", "2014-10-20", "F", "WT1 1AA");
        assert_eq!(guard_(&amelia, &mia), Some(Guard::Review(SIBLINGS_ALIKE)));
        let mila = rec("Mila", "Calder", "2014-10-20", "F", "WT1 1AA");
        assert_eq!(
            guard_(&mila, &mia),
            None,
            "a close spelling on the same date: the model's"
        );
        let mila = rec("Mila", "Calder", "2011-02-13", "F", "WT1 1AA");
        assert_eq!(guard_(&mila, &mia), Some(Guard::Review(SIBLINGS_ALIKE)));
        // The same name, a date far out: one child with a wrong date, for the model to weigh.
        let amelia2 = rec("Amelia", "Calder", "2011-02-13", "F", "WT1 1AA");
        assert_eq!(guard_(&amelia, &amelia2), None);
        // Strangers of the same sex are the model's business, not a rule's.
        let other = rec("Zoe", "Baker", "2013-07-09", "F", "WT9 9XX");
        assert_eq!(guard_(&girl, &other), None);
        // Without sex in the data, only the identifiers hold pairs apart.
        assert_eq!(guard(&girl, &boy, false), None);
        assert_eq!(guard(&a, &b, false), Some(Guard::Apart(DIFFERENT_NHS)));
    }
}
