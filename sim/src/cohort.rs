//! A development cohort for identity matching: synthetic children of a local authority as
//! four agencies record them, with the truth written apart. It is what `weft bench match`
//! measures the matcher on, and what the matching tests draw their hard cases from, so that
//! the cases a real authority's records hold are the cases the matcher is judged on:
//!
//! - births spread over 18 years, so thousands of children share each birthday;
//! - families: siblings share a family name and an address; about 1.5 % of births are twins
//!   (same date of birth and household, different given names, often different sex);
//! - names distributed as in the UK: a few very common, a long tail; middle names, a child known
//!   by the middle name, nicknames and short forms, a previous family name after a parent's
//!   remarriage (older records keep it), typos;
//! - moves: some agencies still hold the former address;
//! - NHS numbers and UPNs missing in the agencies that often lack them, a few mistyped (they
//!   fail their check); dates of birth keyed off by a year, a day/month swap or a digit;
//! - the odd record held twice by one agency.
//!
//! Nothing is tuned to the matcher: the rates are set from what the agencies' records are
//! like, and the same seed gives the same cohort for ever. Names are common UK names or
//! made-up ones; postcodes are in the non-existent `WT` area and NHS numbers in the never-issued
//! `999` range.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use weft_ids::{NhsNumber, Upn};

use crate::names::{self, alike, typo};

/// One agency's record of a child, as text the agency would hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortRecord {
    pub record_id: String,
    /// `health`, `school`, `social_care` or `police`.
    pub agency: &'static str,
    pub given_name: String,
    /// Space-separated; empty when the agency records none.
    pub middle_names: String,
    pub family_name: String,
    /// A family name the child was known by before (empty if none recorded).
    pub former_family_name: String,
    /// `YYYY-MM-DD`, possibly mis-keyed.
    pub birth_date: String,
    /// `F`, `M` or empty.
    pub sex: &'static str,
    pub house_number: String,
    pub street: String,
    pub postcode: String,
    pub nhs_number: String,
    pub upn: String,
    /// The family's household reference as this agency records it (a parent or carer's id);
    /// empty when the agency records none.
    pub household: String,
}

/// A generated cohort: the records, and each record's true child (`truth[i]` is the child of
/// `records[i]`).
#[derive(Debug, Clone)]
pub struct Cohort {
    pub records: Vec<CohortRecord>,
    pub truth: Vec<u32>,
    pub children: usize,
    /// Pairs of children who are twins of each other.
    pub twins: Vec<(u32, u32)>,
}

pub const COLUMNS: [&str; 15] = [
    "record_id",
    "agency",
    "given_name",
    "middle_names",
    "family_name",
    "former_family_name",
    "birth_date",
    "sex",
    "house_number",
    "street",
    "postcode",
    "nhs_number",
    "upn",
    "household",
    "child_id",
];

const STREETS: &[&str] = &[
    "high street",
    "station road",
    "church lane",
    "mill lane",
    "park avenue",
    "victoria road",
    "green lane",
    "manor road",
    "church street",
    "the crescent",
    "kings road",
    "queens road",
    "new road",
    "grange road",
    "school lane",
    "north street",
    "albert road",
    "windsor close",
    "chestnut grove",
    "meadow way",
    "orchard close",
    "springfield road",
    "york road",
];

struct Child {
    given: String,
    middle: Option<String>,
    /// Known by the middle name day to day (a school and the police write it as the given name).
    by_middle: bool,
    family: String,
    former_family: Option<String>,
    dob: (i32, u32, u32),
    female: bool,
    address: (u32, &'static str, String),
    former_address: Option<(u32, &'static str, String)>,
    nhs: String,
    upn: Option<String>,
    household: u32,
}

struct Gen {
    rng: StdRng,
    nhs: HashSet<String>,
    upns: HashSet<String>,
    /// Where [`Gen::nhs_number`] looks for a free number in order once random draws stop
    /// finding one.
    next_nhs: u32,
}

/// Random draws for a free NHS number before taking the next free one in order.
const NHS_DRAWS: usize = 64;

impl Gen {
    fn new(seed: u64) -> Self {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            nhs: HashSet::new(),
            upns: HashSet::new(),
            next_nhs: 0,
        }
    }

    /// A number of the never-issued `999` range not given to another child. The range holds
    /// about 909,000 valid numbers: random draws while it is sparse (every cohort of ordinary
    /// size), then the next free number in order, so a cohort of most of a million children
    /// costs linear time, not ever longer searches of a nearly full range; once it is full, a
    /// child has none (empty), as if no agency had captured it.
    fn nhs_number(&mut self) -> String {
        let valid = |prefix: String| {
            (0..10)
                .map(|d| format!("{prefix}{d}"))
                .find(|n| NhsNumber::parse(n).is_ok())
        };
        for _ in 0..NHS_DRAWS {
            let prefix = format!("999{:06}", self.rng.gen_range(0..1_000_000));
            if let Some(n) = valid(prefix) {
                if self.nhs.insert(n.clone()) {
                    return n;
                }
            }
        }
        while self.next_nhs < 1_000_000 {
            let prefix = format!("999{:06}", self.next_nhs);
            self.next_nhs += 1;
            if let Some(n) = valid(prefix) {
                if self.nhs.insert(n.clone()) {
                    return n;
                }
            }
        }
        String::new()
    }

    fn upn(&mut self, year: i32) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRTUVWXYZ";
        loop {
            let rest = format!(
                "999{:04}{:02}{:03}",
                self.rng.gen_range(1000..5000),
                (year + 5).rem_euclid(100),
                self.rng.gen_range(0..1000)
            );
            if let Some(u) = ALPHABET
                .iter()
                .map(|&c| format!("{}{rest}", c as char))
                .find(|u| Upn::parse(u).is_ok())
            {
                if self.upns.insert(u.clone()) {
                    return u;
                }
            }
        }
    }

    fn postcode(&mut self) -> String {
        const INWARD: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
        format!(
            "WT{} {}{}{}",
            self.rng.gen_range(1..=20),
            self.rng.gen_range(0..=9),
            INWARD[self.rng.gen_range(0..INWARD.len())] as char,
            INWARD[self.rng.gen_range(0..INWARD.len())] as char
        )
    }

    fn address(&mut self) -> (u32, &'static str, String) {
        (
            self.rng.gen_range(1..200),
            STREETS[self.rng.gen_range(0..STREETS.len())],
            self.postcode(),
        )
    }

    fn given(&mut self, female: bool, taken: &[String]) -> String {
        loop {
            let name = names::given(&mut self.rng, female);
            if !taken.iter().any(|t| alike(t, &name)) {
                return name;
            }
        }
    }

    /// A younger sibling's birth: 10 to 48 months after `prev`, if still within the cohort's
    /// 18 years.
    fn after(&mut self, (y, m, d): (i32, u32, u32)) -> Option<(i32, u32, u32)> {
        use chrono::Datelike;
        let prev = chrono::NaiveDate::from_ymd_opt(y, m, d)?;
        let next =
            prev.checked_add_signed(chrono::Duration::days(self.rng.gen_range(300..1460)))?;
        (next < chrono::NaiveDate::from_ymd_opt(2025, 10, 1)?)
            .then(|| (next.year(), next.month(), next.day()))
    }

    fn birth(&mut self) -> (i32, u32, u32) {
        // 18 school years of births, October 2007 to September 2025.
        let day = self.rng.gen_range(0..18 * 365);
        let d = chrono::NaiveDate::from_ymd_opt(2007, 10, 1)
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(day)))
            .unwrap_or_default();
        use chrono::Datelike;
        (d.year(), d.month(), d.day())
    }
}

/// A date of birth as a clerk might key it: year off by one, day and month swapped, one digit.
fn miskey(rng: &mut StdRng, (y, m, d): (i32, u32, u32)) -> (i32, u32, u32) {
    match rng.gen_range(0..3) {
        0 => (y + if rng.gen_bool(0.5) { 1 } else { -1 }, m, d),
        1 if d <= 12 && d != m => (y, d, m),
        _ => {
            let d2 = if d % 10 == 9 || d >= 28 { d - 1 } else { d + 1 };
            (y, m, d2)
        }
    }
}

/// Mistypes an identifier so that it fails its check (a swapped pair of digits, mostly).
fn mistype(rng: &mut StdRng, id: &str) -> String {
    let mut c: Vec<char> = id.chars().collect();
    let i = rng.gen_range(3..c.len() - 1);
    if c[i] != c[i + 1] {
        c.swap(i, i + 1);
    } else {
        c[i] = if c[i] == '1' { '2' } else { '1' };
    }
    c.into_iter().collect()
}

/// How often each agency holds a child, and what it tends to lack.
struct AgencyProfile {
    name: &'static str,
    coverage: f64,
    nhs: f64,
    upn: f64,
    /// Chance a record is from before a move or name change (holds the old values).
    stale: f64,
    /// Chance a name is written as the short form or the name the child goes by.
    informal: f64,
    typo: f64,
    dob_error: f64,
    household: bool,
}

const AGENCIES: [AgencyProfile; 4] = [
    AgencyProfile {
        name: "health",
        coverage: 0.96,
        nhs: 0.99,
        upn: 0.0,
        stale: 0.35,
        informal: 0.03,
        typo: 0.03,
        dob_error: 0.005,
        household: false,
    },
    AgencyProfile {
        name: "school",
        coverage: 0.72,
        nhs: 0.45,
        upn: 0.98,
        stale: 0.15,
        informal: 0.25,
        typo: 0.03,
        dob_error: 0.01,
        household: true,
    },
    AgencyProfile {
        name: "social_care",
        coverage: 0.26,
        nhs: 0.7,
        upn: 0.35,
        stale: 0.2,
        informal: 0.15,
        typo: 0.05,
        dob_error: 0.02,
        household: true,
    },
    AgencyProfile {
        name: "police",
        coverage: 0.2,
        nhs: 0.1,
        upn: 0.0,
        stale: 0.3,
        informal: 0.4,
        typo: 0.08,
        dob_error: 0.04,
        household: false,
    },
];

/// A child of the cohort as they are, before any agency records them: who the demo's
/// simulated partner systems hold ([`crate::population`]), so that the demo's children come in
/// the cohort's households — brothers and sisters sharing a family name and a home, twins, a
/// name changed after a remarriage — with the cohort's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub given_name: String,
    pub family_name: String,
    pub birth_date: (i32, u32, u32),
    pub female: bool,
    /// Children of one household share it (and their family name, unless one changed).
    pub household: u32,
}

/// The first `children` children of the cohort of `seed`, as [`generate`] draws them.
pub fn people(seed: u64, children: usize) -> Vec<Person> {
    let (kids, _) = children_of(&mut Gen::new(seed), children);
    kids.into_iter()
        .map(|c| Person {
            given_name: c.given,
            family_name: c.family,
            birth_date: c.dob,
            female: c.female,
            household: c.household,
        })
        .collect()
}

/// Generates a cohort of `children` children (about 2.15 records each).
pub fn generate(seed: u64, children: usize) -> Cohort {
    let mut g = Gen::new(seed);
    let (kids, twins) = children_of(&mut g, children);
    let mut records = Vec::new();
    let mut truth = Vec::new();
    for (id, c) in kids.iter().enumerate() {
        let mut any = false;
        for a in &AGENCIES {
            // School only once a child is of school age.
            if a.name == "school" && c.dob.0 > 2021 {
                continue;
            }
            if !g.rng.gen_bool(a.coverage) {
                continue;
            }
            any = true;
            let copies = if g.rng.gen_bool(0.01) { 2 } else { 1 };
            for _ in 0..copies {
                let r = write(&mut g.rng, c, a, records.len());
                records.push(r);
                truth.push(id as u32);
            }
        }
        if !any {
            // Every child is known to someone: a health record at least.
            let r = write(&mut g.rng, c, &AGENCIES[0], records.len());
            records.push(r);
            truth.push(id as u32);
        }
    }
    let children = kids.len();
    drop(kids);
    // Records arrive in no particular order. Shuffled with their truth in place, which moves
    // them exactly as shuffling their positions would, without a second copy of a large cohort.
    let mut pairs: Vec<(CohortRecord, u32)> = records.into_iter().zip(truth).collect();
    pairs.shuffle(&mut g.rng);
    let (records, truth): (Vec<CohortRecord>, Vec<u32>) = pairs.into_iter().unzip();
    Cohort {
        records,
        truth,
        children,
        twins,
    }
}

/// The cohort's children, household by household, and the pairs of them who are twins.
fn children_of(g: &mut Gen, children: usize) -> (Vec<Child>, Vec<(u32, u32)>) {
    let mut kids: Vec<Child> = Vec::with_capacity(children);
    let mut twins = Vec::new();
    let mut household = 0u32;
    while kids.len() < children {
        household += 1;
        let family = names::family_name(&mut g.rng);
        let address = g.address();
        let moved = g.rng.gen_bool(0.25).then(|| g.address());
        let remarried = g.rng.gen_bool(0.05).then(|| names::family(&mut g.rng));
        let size = [1, 1, 2, 2, 2, 3, 3, 4][g.rng.gen_range(0..8)];
        let mut taken: Vec<String> = Vec::new();
        let mut i = 0;
        let mut last_birth: Option<(i32, u32, u32)> = None;
        while i < size && kids.len() < children {
            let twin = g.rng.gen_bool(0.015) && kids.len() + 1 < children;
            // Brothers and sisters are born at least ten months apart (twins aside).
            let dob = match last_birth {
                None => g.birth(),
                Some(prev) => match g.after(prev) {
                    Some(d) => d,
                    None => break,
                },
            };
            last_birth = Some(dob);
            let n = if twin { 2 } else { 1 };
            for k in 0..n {
                let female = g.rng.gen_bool(0.49);
                let given = g.given(female, &taken);
                taken.push(given.clone());
                let middle = if g.rng.gen_bool(0.6) {
                    let same_sex = g.rng.gen_bool(0.9);
                    let m = g.given(same_sex == female, &taken);
                    // A brother's middle name is not his sister's given name.
                    taken.push(m.clone());
                    Some(m)
                } else {
                    None
                };
                let by_middle = middle.is_some() && g.rng.gen_bool(0.04);
                let upn = (dob.0 <= 2021).then(|| g.upn(dob.0));
                if k == 1 {
                    twins.push((kids.len() as u32 - 1, kids.len() as u32));
                }
                kids.push(Child {
                    given,
                    middle,
                    by_middle,
                    family: family.clone(),
                    former_family: remarried.as_ref().map(|_| family.clone()),
                    dob,
                    female,
                    address: moved.clone().unwrap_or_else(|| address.clone()),
                    former_address: moved.as_ref().map(|_| address.clone()),
                    nhs: g.nhs_number(),
                    upn,
                    household,
                });
                if let Some(new) = &remarried {
                    if let Some(c) = kids.last_mut() {
                        c.family = new.clone();
                    }
                }
            }
            i += n;
        }
    }
    (kids, twins)
}

/// A search benchmark's population, from the cohort: an index holding one record of each of
/// `children` children (whichever agency's came first), and searches written as another agency
/// recorded the same child — or, one search in ten, a record of a child held out of the index:
/// a stranger, often the brother, sister or twin of a child who is in it.
#[derive(Debug, Clone)]
pub struct SearchSplit {
    /// One record of each child in the index.
    pub index: Vec<CohortRecord>,
    /// Each search's record, and the position in `index` of its child (`None`: a stranger).
    pub searches: Vec<(CohortRecord, Option<usize>)>,
    /// Stranger searches whose twin is in the index.
    pub stranger_twins: usize,
}

/// Splits a cohort of `children` children and the strangers `searches` needs (one search in
/// ten, the tenth, twentieth, …) into a [`SearchSplit`]. Linear in the cohort's size; the
/// records are moved, never copied, so a million children fit.
pub fn search_split(seed: u64, children: usize, searches: usize) -> SearchSplit {
    let strangers = searches / 10;
    let cohort = generate(seed, children + strangers);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5ea4_c4ed);
    let mut of_child: Vec<Vec<usize>> = vec![Vec::new(); cohort.children];
    for (i, &c) in cohort.truth.iter().enumerate() {
        of_child[c as usize].push(i);
    }
    let held: HashSet<usize> =
        rand::seq::index::sample(&mut rng, cohort.children, strangers.min(cohort.children))
            .into_iter()
            .collect();
    let mut twin_of: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for &(a, b) in &cohort.twins {
        twin_of.insert(a as usize, b as usize);
        twin_of.insert(b as usize, a as usize);
    }
    let mut slots: Vec<Option<CohortRecord>> = cohort.records.into_iter().map(Some).collect();
    let mut indexed: Vec<usize> = Vec::with_capacity(children);
    let mut index = Vec::with_capacity(children);
    let mut outside: Vec<usize> = Vec::with_capacity(strangers);
    for (child, records) in of_child.iter().enumerate() {
        if held.contains(&child) {
            outside.push(child);
        } else if let Some(r) = records.first().and_then(|&i| slots[i].take()) {
            indexed.push(child);
            index.push(r);
        }
    }
    // The searches' order is random; which stranger is searched is the held-out children's.
    outside.shuffle(&mut rng);
    let mut stranger_twins = 0;
    let mut out = Vec::with_capacity(searches);
    let mut next_stranger = outside.into_iter();
    for s in 0..searches {
        if s % 10 == 9 {
            let Some(child) = next_stranger.next() else {
                continue;
            };
            let Some(r) = of_child[child].iter().find_map(|&i| slots[i].take()) else {
                continue;
            };
            stranger_twins += usize::from(twin_of.get(&child).is_some_and(|t| !held.contains(t)));
            out.push((r, None));
            continue;
        }
        if index.is_empty() {
            continue;
        }
        // A child with a record besides the indexed one; a few tries, then the indexed record
        // itself as another agency would have written it word for word.
        let mut pick = None;
        for _ in 0..20 {
            let at = rng.gen_range(0..index.len());
            let rest = &of_child[indexed[at]][1..];
            let free: Vec<usize> = rest
                .iter()
                .copied()
                .filter(|&i| slots[i].is_some())
                .collect();
            if let Some(&i) = free.choose(&mut rng) {
                pick = slots[i].take().map(|r| (r, at));
                break;
            }
        }
        let (r, at) = match pick {
            Some(p) => p,
            None => {
                let at = rng.gen_range(0..index.len());
                (index[at].clone(), at)
            }
        };
        out.push((r, Some(at)));
    }
    SearchSplit {
        index,
        searches: out,
        stranger_twins,
    }
}

/// One agency's record of a child.
fn write(rng: &mut StdRng, c: &Child, a: &AgencyProfile, n: usize) -> CohortRecord {
    let stale = rng.gen_bool(a.stale);
    let mut given = c.given.clone();
    let mut middle = c.middle.clone().unwrap_or_default();
    if c.by_middle && a.informal > 0.1 {
        // Known by the middle name: that is the name this agency writes.
        given = c.middle.clone().unwrap_or_default();
        middle = String::new();
    } else if rng.gen_bool(a.informal) {
        if let Some(short) = names::short_form(&given) {
            given = short.to_string();
        }
    }
    // Health records carry every forename from the birth registration; the police record one;
    // schools and social care often leave middle names out.
    let drop_middle = match a.name {
        "health" => 0.05,
        "police" => 1.0,
        _ => 0.3,
    };
    if rng.gen_bool(drop_middle) {
        middle = String::new();
    }
    if rng.gen_bool(a.typo) {
        given = typo(rng, &given);
    }
    let mut family = match (&c.former_family, stale) {
        (Some(old), true) => old.clone(),
        _ => c.family.clone(),
    };
    if rng.gen_bool(a.typo) {
        family = typo(rng, &family);
    }
    if family.contains('-') && rng.gen_bool(0.2) {
        // One half of a double-barrelled name.
        family = family.split('-').next().unwrap_or_default().to_string();
    }
    let former_family = match &c.former_family {
        Some(old) if !stale && rng.gen_bool(0.5) => old.clone(),
        _ => String::new(),
    };
    let dob = if rng.gen_bool(a.dob_error) {
        miskey(rng, c.dob)
    } else {
        c.dob
    };
    let (house, street, postcode) = match (&c.former_address, stale) {
        (Some(old), true) => old.clone(),
        _ => c.address.clone(),
    };
    let postcode = if rng.gen_bool(0.03) {
        String::new()
    } else {
        postcode
    };
    let nhs = if !c.nhs.is_empty() && rng.gen_bool(a.nhs) {
        if rng.gen_bool(0.01) {
            mistype(rng, &c.nhs)
        } else {
            c.nhs.clone()
        }
    } else {
        String::new()
    };
    let upn = match &c.upn {
        Some(u) if rng.gen_bool(a.upn) => {
            if rng.gen_bool(0.01) {
                mistype(rng, u)
            } else {
                u.clone()
            }
        }
        _ => String::new(),
    };
    let sex = if rng.gen_bool(0.03) {
        ""
    } else if c.female {
        "F"
    } else {
        "M"
    };
    CohortRecord {
        record_id: format!("{}-{n:07}", &a.name[..2]),
        agency: a.name,
        given_name: given,
        middle_names: middle,
        family_name: family,
        former_family_name: former_family,
        birth_date: format!("{:04}-{:02}-{:02}", dob.0, dob.1, dob.2),
        sex,
        house_number: house.to_string(),
        street: street.to_string(),
        postcode,
        nhs_number: nhs,
        upn,
        household: if a.household {
            format!("hh{:07}", c.household)
        } else {
            String::new()
        },
    }
}

impl CohortRecord {
    /// The record as an adapter hands it to the gateway's master child index: the five
    /// compared fields, middle and former family names, the address as a line, the household
    /// reference as a `family:` key, and the NHS number and UPN as given (an index checks them).
    /// The record id is the local id.
    pub fn source_record(&self) -> weft_adapters::SourceRecord {
        let text = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let identifiers = [("nhs_number", &self.nhs_number), ("upn", &self.upn)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| weft_adapters::Identifier::new(k, v.as_str()))
            .collect();
        let line = format!("{} {}", self.house_number, self.street);
        weft_adapters::SourceRecord {
            local_id: self.record_id.clone(),
            identifiers,
            demographics: weft_adapters::Demographics {
                given_name: text(&self.given_name),
                family_name: text(&self.family_name),
                birth_date: text(&self.birth_date),
                sex: text(self.sex),
                postcode: text(&self.postcode),
                middle_names: text(&self.middle_names),
                former_family_names: text(&self.former_family_name).into_iter().collect(),
                address_lines: text(line.trim()).into_iter().collect(),
                household: weft_adapters::record::household::key(
                    weft_adapters::record::household::FAMILY,
                    &self.household,
                )
                .into_iter()
                .collect(),
                ..Default::default()
            },
            score: None,
            restricted: false,
        }
    }

    pub fn values(&self) -> [&str; 14] {
        [
            &self.record_id,
            self.agency,
            &self.given_name,
            &self.middle_names,
            &self.family_name,
            &self.former_family_name,
            &self.birth_date,
            self.sex,
            &self.house_number,
            &self.street,
            &self.postcode,
            &self.nhs_number,
            &self.upn,
            &self.household,
        ]
    }
}

impl Cohort {
    /// Writes the records to `records` (CSV, no truth) and each record's child to `truth`
    /// (`record_id,child_id`).
    pub fn write(&self, records: &Path, truth: &Path) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(records)?);
        writeln!(w, "{}", COLUMNS[..14].join(","))?;
        for r in &self.records {
            writeln!(w, "{}", r.values().join(","))?;
        }
        w.flush()?;
        let mut t = std::io::BufWriter::new(std::fs::File::create(truth)?);
        writeln!(t, "record_id,child_id")?;
        for (r, c) in self.records.iter().zip(&self.truth) {
            writeln!(t, "{},c{c}", r.record_id)?;
        }
        t.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_split_indexes_one_record_a_child_and_holds_strangers_out() {
        let split = search_split(5, 2_000, 300);
        assert_eq!(split.index.len(), 2_000);
        assert_eq!(split.searches.len(), 300);
        let strangers: Vec<&CohortRecord> = split
            .searches
            .iter()
            .filter(|(_, w)| w.is_none())
            .map(|(r, _)| r)
            .collect();
        assert_eq!(strangers.len(), 30, "one search in ten");
        assert!(split
            .searches
            .iter()
            .enumerate()
            .all(|(s, (_, w))| (s % 10 == 9) == w.is_none()));
        // No record is both in the index and searched for, and the same seed gives the same split.
        let indexed: HashSet<&str> = split.index.iter().map(|r| r.record_id.as_str()).collect();
        assert!(split
            .searches
            .iter()
            .all(|(r, _)| !indexed.contains(r.record_id.as_str())));
        let again = search_split(5, 2_000, 300);
        assert_eq!(again.index, split.index);
        // A search for a known child is another of that child's records: most agree on the date
        // of birth with the indexed one.
        let same_dob = split
            .searches
            .iter()
            .filter_map(|(r, w)| Some((r, &split.index[(*w)?])))
            .filter(|(r, i)| r.birth_date == i.birth_date)
            .count();
        assert!(same_dob > 230, "{same_dob} of 270");
    }

    #[test]
    fn a_seed_names_one_cohort_with_twins_and_about_two_records_a_child() {
        let a = generate(3, 5_000);
        let b = generate(3, 5_000);
        assert_eq!(a.records, b.records);
        assert_eq!(a.children, 5_000);
        let per_child = a.records.len() as f64 / a.children as f64;
        assert!((1.9..2.5).contains(&per_child), "{per_child}");
        // About 1.5 % of births are twins: some tens of pairs in 5,000 children.
        assert!((15..120).contains(&a.twins.len()), "{}", a.twins.len());
        let ids: HashSet<&str> = a.records.iter().map(|r| r.record_id.as_str()).collect();
        assert_eq!(ids.len(), a.records.len(), "record ids are unique");
        // Thousands of children share a birthday with someone.
        let dobs: HashSet<&str> = a.records.iter().map(|r| r.birth_date.as_str()).collect();
        assert!(dobs.len() < a.children);
        // No field holds a comma (the CSV is written without quoting).
        assert!(a
            .records
            .iter()
            .all(|r| r.values().iter().all(|v| !v.contains(','))));
    }
}
