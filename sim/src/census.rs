//! A school census export (pupils on roll) drawn from the development cohort ([`crate::cohort`]):
//! the schools' own records of the cohort's children, written in the CSV layout the census
//! importer reads (`census_pupils_csv`). Names are the cohort's (common UK names with a long
//! tail, middle names, former surnames after a remarriage, the odd typo), UPNs pass their check
//! letter except the few a clerk mistyped, brothers and sisters share a household and a school,
//! and about one pupil in a hundred is on the roll twice under two admission numbers — what an
//! authority's census holds, so that `weft bench import` measures a real import.

use std::fmt::Write as _;

use crate::cohort::{self, CohortRecord};
use crate::names::title;

/// The header the export is written with: names as MIS exports spell them.
pub const HEADER: &str = "PupilID,UPN,Legal Surname,Legal Forename,Middle Names,Former Surname,\
DOB,Gender,House Number,Street,Postcode,URN,NCyearActual,SENprovision";

/// Pupils per school, about: a primary's roll is a few hundred, a secondary's over a thousand.
const PUPILS_PER_SCHOOL: usize = 450;

/// The census year's autumn: year groups are counted from it.
const CENSUS_YEAR: i32 = 2025;

/// A census of `pupils` pupils from the cohort of `seed`: the same seed and size give the same
/// file.
pub fn pupils_csv(seed: u64, pupils: usize) -> String {
    let records = school_records(seed, pupils);
    let schools = (pupils / PUPILS_PER_SCHOOL).max(1);
    let mut out = String::with_capacity(pupils * 120 + HEADER.len() + 1);
    out.push_str(HEADER);
    out.push('\n');
    for (i, r) in records.iter().enumerate() {
        let (y, m, d) = parts(&r.birth_date);
        // Brothers and sisters go to the same school, more or less.
        let household: usize = r.household.trim_start_matches("hh").parse().unwrap_or(i);
        let urn = 100_000 + (household.wrapping_mul(2_654_435_761) >> 7) % schools;
        let year = CENSUS_YEAR - y - i32::from(m >= 9) - 5;
        let year = match year {
            ..=-1 => "N2".to_string(),
            0 => "R".to_string(),
            13.. => "13".to_string(),
            n => n.to_string(),
        };
        let sen = match (i.wrapping_mul(40_503) >> 3) % 100 {
            0..=3 => "E",
            4..=16 => "K",
            _ => "N",
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{d:02}/{m:02}/{y:04},{},{},{},{},{urn},{year},{sen}",
            r.record_id,
            r.upn,
            title(&r.family_name),
            title(&r.given_name),
            title(&r.middle_names),
            title(&r.former_family_name),
            r.sex,
            r.house_number,
            title(&r.street),
            r.postcode,
        );
    }
    out
}

/// The first `pupils` school records of a cohort large enough to hold them.
fn school_records(seed: u64, pupils: usize) -> Vec<CohortRecord> {
    // About 0.56 school records a child: school-age children (born by 2021) on a school's roll.
    let mut children = pupils * 2 + 50;
    loop {
        let c = cohort::generate(seed, children);
        let school: Vec<CohortRecord> = c
            .records
            .into_iter()
            .filter(|r| r.agency == "school")
            .take(pupils)
            .collect();
        if school.len() == pupils {
            return school;
        }
        children *= 2;
    }
}

fn parts(date: &str) -> (i32, u32, u32) {
    let mut it = date.split('-');
    let mut next = || it.next().and_then(|p| p.parse::<i64>().ok()).unwrap_or(1);
    (next() as i32, next() as u32, next() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_census_has_realistic_names_and_valid_upns() {
        let csv = pupils_csv(11, 3_000);
        assert_eq!(csv, pupils_csv(11, 3_000), "a seed names one file");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len(), 3_001);
        let columns = HEADER.split(',').count();
        let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
        assert!(rows.iter().all(|r| r.len() == columns));
        let ids: HashSet<&str> = rows.iter().map(|r| r[0]).collect();
        assert_eq!(ids.len(), rows.len(), "pupil ids are unique");
        let upns: Vec<&str> = rows
            .iter()
            .map(|r| r[1])
            .filter(|u| !u.is_empty())
            .collect();
        let valid = upns
            .iter()
            .filter(|u| weft_ids::Upn::parse(u).is_ok())
            .count();
        // Nearly every pupil has a UPN, and all but the mistyped ~1 % pass their check.
        assert!(upns.len() * 100 > rows.len() * 95, "{}", upns.len());
        assert!(valid * 100 > upns.len() * 97, "{valid} of {}", upns.len());
        // Many surnames, a long tail. (The cohort draws them from a Zipf law, which makes the
        // commonest about one in nine — far more than Smith's share in the UK, so blocking is
        // harder here than on a real roll, not easier.)
        let families: HashSet<&str> = rows.iter().map(|r| r[2]).collect();
        assert!(families.len() > 500, "{}", families.len());
        assert!(rows.iter().all(|r| r[2].starts_with(char::is_uppercase)));
        let smiths = rows.iter().filter(|r| r[2] == "Smith").count();
        assert!(smiths * 6 < rows.len(), "{smiths}");
    }

    #[test]
    fn names_are_capitalised_as_schools_write_them() {
        assert_eq!(title("smith-jones"), "Smith-Jones");
        assert_eq!(title("mary ann"), "Mary Ann");
        assert_eq!(title("o'brien"), "O'Brien");
        assert_eq!(title(""), "");
    }
}
