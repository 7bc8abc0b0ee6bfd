//! Synthetic children, each with a canonical truth and the way every partner system records them.
//!
//! The differences between systems are the point: matching, merging and "disagreements shown side
//! by side" can only be exercised against records that disagree the way real ones do — a school
//! that knows Will rather than William, a surname misspelt at the police front desk, an address
//! that moved in one system and not another, identifiers that one agency never captured.
//!
//! Everything is derived from one seeded [`StdRng`], and ages are measured against the fixed
//! [`REFERENCE_DATE`] rather than today, so a seed names the same population for ever. Beyond
//! the pinned scenario children, the children are the development cohort's of the same seed
//! ([`crate::cohort::people`], those aged 2 to 17): its names, birthdays and households —
//! brothers and sisters sharing a family name and a home, twins — so the demo's index holds
//! the children the benchmarks measure; what each system makes of them is this module's.
//! None describes a real person.
//! Postcodes use the `WT` area, which does not exist, and phone numbers sit in Ofcom's range
//! reserved for drama (01632 960xxx); NHS numbers come from the `999` range, which is never issued.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use weft_ids::{NhsNumber, Upn};

use crate::cohort::{self, Person};
use crate::names;

/// "Today" for the synthetic world: ages, school years, open episodes and "last night" are all
/// relative to it.
pub const REFERENCE_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2025, 10, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// The start of the school year that [`REFERENCE_DATE`] falls in; year groups count from it.
const SCHOOL_YEAR_CUTOFF: NaiveDate = match NaiveDate::from_ymd_opt(2025, 8, 31) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// The simulated school's unique reference number (its agency id is `urn-` + this).
pub const SCHOOL_URN: &str = "100001";
/// Local authority code used in UPNs; 999 is no real LA, so synthetic UPNs cannot collide with
/// real ones.
pub const LA_CODE: &str = "999";
/// DfE establishment number of the simulated school, characters 5–8 of its UPNs.
const ESTABLISHMENT: &str = "4001";

/// The four partner systems a child may be recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    Health,
    School,
    SocialCare,
    Police,
}

impl System {
    pub const ALL: [System; 4] = [
        System::Health,
        System::School,
        System::SocialCare,
        System::Police,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

impl Sex {
    /// As every simulated system writes it (FHIR `gender` codes), so that a sex "disagreement"
    /// never comes from coding alone.
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Female => "female",
            Sex::Male => "male",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub line: String,
    pub town: String,
    pub postcode: String,
}

/// Who the child really is: what every system would say if none of them made mistakes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Truth {
    pub given_name: String,
    pub family_name: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub address: Address,
    /// Always valid under the modulus-11 rule.
    pub nhs_number: String,
    /// Valid under the check-letter rule; only children of school age have one.
    pub upn: Option<String>,
}

/// How one system records the child: possibly a nickname, a misspelling, an old address, or a
/// missing identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceIdentity {
    /// The system's own id for the record (FHIR Patient id, pupil id, person id…).
    pub local_id: String,
    pub given_name: String,
    pub family_name: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub address: Address,
    pub nhs_number: Option<String>,
    pub upn: Option<String>,
}

/// FHIR `Flag.code` values the health server uses. CP-IS style codes (`CPP`, `LAC`) should be
/// mapped to `health.cp_flag`; the sensitive ones are deliberately left unmapped so the adapter's
/// fail-safe (unknown code → `health.sensitive`) is what protects them.
pub mod flag_codes {
    /// Child protection plan (CP-IS).
    pub const CHILD_PROTECTION: &str = "CPP";
    pub const CHILD_PROTECTION_DISPLAY: &str = "Child protection plan";
    /// Looked-after child (CP-IS).
    pub const LOOKED_AFTER: &str = "LAC";
    pub const LOOKED_AFTER_DISPLAY: &str = "Looked after child";
    /// Sexual health clinic attendance: sensitive, unmapped.
    pub const SEXUAL_HEALTH: &str = "SH";
    pub const SEXUAL_HEALTH_DISPLAY: &str = "Sexual health clinic attendance";
    /// Child and adolescent mental health service appointment: sensitive, unmapped.
    pub const MENTAL_HEALTH: &str = "CAMHS";
    pub const MENTAL_HEALTH_DISPLAY: &str = "Child and adolescent mental health service";
    /// `Flag.code.coding.system` for all of the above.
    pub const SYSTEM: &str = "https://weft.example/fhir/CodeSystem/child-flags";

    /// Whether a code is one of the CP-IS codes that configuration maps to `health.cp_flag`;
    /// every other code is sensitive.
    pub fn is_cp(code: &str) -> bool {
        code == CHILD_PROTECTION || code == LOOKED_AFTER
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthFlag {
    pub id: String,
    pub code: String,
    pub display: String,
    pub text: String,
    pub start: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthRecord {
    pub identity: SourceIdentity,
    /// ODS code of the registered GP practice.
    pub gp_ods: String,
    pub phone: String,
    /// `meta.security` R: like PDS, the server then withholds address, telecom and GP.
    pub restricted: bool,
    pub flags: Vec<HealthFlag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TermAttendance {
    pub term: String,
    pub term_start: NaiveDate,
    pub possible_sessions: i32,
    pub attended_sessions: i32,
}

impl TermAttendance {
    pub fn percent(&self) -> f64 {
        100.0 * f64::from(self.attended_sessions) / f64::from(self.possible_sessions)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionKind {
    Suspension,
    Permanent,
}

impl ExclusionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionKind::Suspension => "suspension",
            ExclusionKind::Permanent => "permanent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    pub kind: ExclusionKind,
    pub start_date: NaiveDate,
    pub days: i32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchoolRecord {
    pub identity: SourceIdentity,
    /// "Known as" name kept beside the legal forename, as MIS systems do.
    pub preferred_name: Option<String>,
    pub school_urn: String,
    pub on_roll: bool,
    /// When a pupil who is no longer on the roll left it (a permanent exclusion's first day).
    pub leaving_date: Option<NaiveDate>,
    /// 0 is Reception, 1–13 are Years 1–13.
    pub year_group: i32,
    pub send_status: String,
    /// Oldest term first; the last one is the current term to date.
    pub attendance: Vec<TermAttendance>,
    pub exclusions: Vec<Exclusion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    ChildInNeed,
    ChildProtection,
    LookedAfter,
}

impl EpisodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeKind::ChildInNeed => "child_in_need",
            EpisodeKind::ChildProtection => "child_protection",
            EpisodeKind::LookedAfter => "looked_after",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Episode {
    pub kind: EpisodeKind,
    pub start_date: NaiveDate,
    /// `None` while the episode is open.
    pub end_date: Option<NaiveDate>,
    pub category: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    pub worker: String,
    pub team: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseNote {
    pub noted_on: NaiveDate,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocialCareRecord {
    pub identity: SourceIdentity,
    /// Oldest first; a closed case has no open episode and no allocation.
    pub episodes: Vec<Episode>,
    pub allocation: Option<Allocation>,
    pub case_notes: Vec<CaseNote>,
}

impl SocialCareRecord {
    /// The open episode, if the case is open.
    pub fn current(&self) -> Option<&Episode> {
        self.episodes.iter().rev().find(|e| e.end_date.is_none())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub reference: String,
    pub occurred_at: NaiveDateTime,
    pub location: String,
    pub kind: String,
    pub summary: String,
    pub child_present: bool,
}

/// A domestic-abuse incident at which a child was, or may have been, present: what Operation
/// Encompass notifies a school about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomesticAbuse {
    pub reference: String,
    pub occurred_at: NaiveDateTime,
    pub location: String,
    pub postcode: String,
    pub child_present: bool,
    /// DASH risk level: standard, medium or high.
    pub risk: String,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoliceRecord {
    pub identity: SourceIdentity,
    pub incidents: Vec<Incident>,
    pub domestic_abuse: Vec<DomesticAbuse>,
}

/// One synthetic child: the truth, and the record (if any) each system holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimChild {
    /// A handle for tests (`sim-0007`); no partner system knows it.
    pub key: String,
    pub truth: Truth,
    /// The DESIGN.md scenario: 14, known to social care for domestic abuse, attendance falling,
    /// a police domestic incident last night.
    pub scenario: bool,
    pub health: Option<HealthRecord>,
    pub school: Option<SchoolRecord>,
    pub social_care: Option<SocialCareRecord>,
    pub police: Option<PoliceRecord>,
}

impl SimChild {
    /// Age in whole years on [`REFERENCE_DATE`].
    pub fn age(&self) -> u32 {
        age_on(self.truth.birth_date, REFERENCE_DATE)
    }

    /// How a system records the child, if it does.
    pub fn identity(&self, system: System) -> Option<&SourceIdentity> {
        match system {
            System::Health => self.health.as_ref().map(|r| &r.identity),
            System::School => self.school.as_ref().map(|r| &r.identity),
            System::SocialCare => self.social_care.as_ref().map(|r| &r.identity),
            System::Police => self.police.as_ref().map(|r| &r.identity),
        }
    }

    /// The system's own id for the child's record.
    pub fn local_id(&self, system: System) -> Option<&str> {
        self.identity(system).map(|i| i.local_id.as_str())
    }

    pub fn present_in(&self, system: System) -> bool {
        self.identity(system).is_some()
    }

    pub fn in_all_four(&self) -> bool {
        System::ALL.iter().all(|s| self.present_in(*s))
    }

    /// The first two systems (in [`System::ALL`] order) whose family names differ.
    pub fn family_name_disagreement(&self) -> Option<(System, System)> {
        let names: Vec<(System, &str)> = System::ALL
            .iter()
            .filter_map(|s| self.identity(*s).map(|i| (*s, i.family_name.as_str())))
            .collect();
        names.iter().enumerate().find_map(|(i, (a, na))| {
            names[i + 1..]
                .iter()
                .find(|(_, nb)| nb != na)
                .map(|(b, _)| (*a, *b))
        })
    }

    /// Whether every record the child has carries the NHS number, so that linking them never
    /// depends on demographics.
    pub fn nhs_number_everywhere(&self) -> bool {
        System::ALL
            .iter()
            .filter_map(|s| self.identity(*s))
            .all(|i| i.nhs_number.is_some())
    }
}

/// The synthetic children of one seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Population {
    pub children: Vec<SimChild>,
}

impl Population {
    /// The DESIGN.md scenario child (always the first child of a non-empty population).
    pub fn scenario(&self) -> Option<&SimChild> {
        self.children.iter().find(|c| c.scenario)
    }

    pub fn children_in_all_four(&self) -> Vec<&SimChild> {
        self.children.iter().filter(|c| c.in_all_four()).collect()
    }

    /// A child in all four systems whose family name differs between two of them while every
    /// record still carries the NHS number: its records link deterministically, so a merged view
    /// must show the disagreement side by side. Present in every population of 2 or more.
    pub fn linkable_disagreement(&self) -> Option<&SimChild> {
        self.children.iter().find(|c| {
            c.in_all_four() && c.nhs_number_everywhere() && c.family_name_disagreement().is_some()
        })
    }

    /// A child in all four systems whose police record has no NHS number and a misspelt family
    /// name, so linking it needs demographic matching. Present in every population of 3 or more.
    pub fn probabilistic_only(&self) -> Option<&SimChild> {
        self.children.iter().find(|c| {
            c.in_all_four()
                && c.police.as_ref().is_some_and(|p| {
                    p.identity.nhs_number.is_none() && p.identity.family_name != c.truth.family_name
                })
        })
    }

    /// Children whose health record is restricted (`meta.security` R).
    pub fn restricted(&self) -> Vec<&SimChild> {
        self.children
            .iter()
            .filter(|c| c.health.as_ref().is_some_and(|h| h.restricted))
            .collect()
    }

    pub fn by_key(&self, key: &str) -> Option<&SimChild> {
        self.children.iter().find(|c| c.key == key)
    }

    pub fn by_nhs_number(&self, nhs_number: &str) -> Option<&SimChild> {
        self.children
            .iter()
            .find(|c| c.truth.nhs_number == nhs_number)
    }

    /// The child whose record in `system` has this local id.
    pub fn by_local_id(&self, system: System, local_id: &str) -> Option<&SimChild> {
        self.children
            .iter()
            .find(|c| c.local_id(system) == Some(local_id))
    }

    pub fn health_records(&self) -> impl Iterator<Item = &HealthRecord> {
        self.children.iter().filter_map(|c| c.health.as_ref())
    }

    pub fn school_records(&self) -> impl Iterator<Item = &SchoolRecord> {
        self.children.iter().filter_map(|c| c.school.as_ref())
    }

    pub fn social_care_records(&self) -> impl Iterator<Item = &SocialCareRecord> {
        self.children.iter().filter_map(|c| c.social_care.as_ref())
    }

    pub fn police_records(&self) -> impl Iterator<Item = &PoliceRecord> {
        self.children.iter().filter_map(|c| c.police.as_ref())
    }
}

/// Generates `n` children from `seed`. The first three are pinned so tests can rely on them for
/// any seed: the scenario child, a [`Population::linkable_disagreement`] child and a
/// [`Population::probabilistic_only`] child. The rest are random.
pub fn generate(seed: u64, n: usize) -> Population {
    generate_with(&mut Gen::new(seed), n)
}

fn generate_with(g: &mut Gen, n: usize) -> Population {
    let mut children: Vec<SimChild> = (0..n)
        .map(|i| {
            let key = format!("sim-{i:04}");
            match i {
                0 => g.scenario(key),
                1 => g.pinned_linkable(key),
                2 => g.pinned_probabilistic(key),
                _ => g.random_child(key),
            }
        })
        .collect();
    g.restrict_some(&mut children);
    give_caseload(&mut children);
    Population { children }
}

/// Keys of the children [`generate_with_households`] adds. Twins: a girl and a boy born the same
/// day at one address, their school records without NHS numbers (so only demographics can link
/// them, and the twin rule must keep them apart).
pub const TWIN_GIRL: &str = "household-twin-girl";
pub const TWIN_BOY: &str = "household-twin-boy";
/// The twins' older brother: same family name and address, another birthday.
pub const OLDER_BROTHER: &str = "household-brother";
/// A girl born the same day as the twins, of another family and address; her police record
/// has no NHS number.
pub const SAME_BIRTHDAY: &str = "household-same-birthday";
/// Two girls of one name born on one day, at two addresses, each known to health by her NHS
/// number. Police hold the first without her NHS number, postcode or house number (the street
/// is hers): the record matches both girls alike on every field the index compares — a street
/// is read only from a line with a house number, since a line without one may be a building's
/// name — so it joins neither and both are proposed for a person, who can tell them apart by
/// the street.
pub const NAMESAKE: &str = "household-namesake";
pub const OTHER_NAMESAKE: &str = "household-other-namesake";

/// As [`generate`], then the children of [`TWIN_GIRL`], [`TWIN_BOY`], [`OLDER_BROTHER`],
/// [`SAME_BIRTHDAY`], [`NAMESAKE`] and [`OTHER_NAMESAKE`] after them: the cases of the development cohort (`cohort`: twins, siblings,
/// strangers sharing a birthday) that the gateway's matcher must get right, in the partners'
/// systems, plus a near-miss — the twin girl's police record gives only her initial and no NHS
/// number, so it could be her or a twin sister, and only a person may say. The first `n`
/// children are exactly those of [`generate`] for the seed. `weft demo` runs on it.
pub fn generate_with_households(seed: u64, n: usize) -> Population {
    let mut g = Gen::new(seed);
    let mut pop = generate_with(&mut g, n);
    pop.children.extend(g.household());
    pop
}

/// How many other open cases the scenario child's worker holds: enough for a demo social worker
/// to have a caseload, not just one child.
const CASELOAD: usize = 3;

/// Allocates the first [`CASELOAD`] other open cases to [`SCENARIO_WORKER`]. Uses no
/// randomness, so the rest of the population is the same for a seed.
fn give_caseload(children: &mut [SimChild]) {
    children
        .iter_mut()
        .filter(|c| !c.scenario)
        .filter_map(|c| c.social_care.as_mut().and_then(|s| s.allocation.as_mut()))
        .take(CASELOAD)
        .for_each(|a| a.worker = SCENARIO_WORKER.to_string());
}

/// Age in whole years on `on`.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> u32 {
    let mut years = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years.max(0) as u32
}

/// The school year group on [`REFERENCE_DATE`] (0 = Reception), if the child is of school age.
pub fn year_group(birth: NaiveDate) -> Option<i32> {
    let age = age_on(birth, SCHOOL_YEAR_CUTOFF) as i32;
    (4..=17).contains(&age).then_some(age - 4)
}

/// Letters a UPN may use (no I, O or S), for check letters and temporary UPNs.
const UPN_ALPHABET: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

const STREETS: &[&str] = &[
    "Loom Street",
    "Shuttle Lane",
    "Weavers Row",
    "Bobbin Close",
    "Spindle Road",
    "Warp Terrace",
    "Mill Race",
    "Heddle Way",
    "Carding Street",
    "Dyehouse Lane",
    "Selvedge Court",
    "Tenter Hill",
];

const TOWNS: &[&str] = &["Weftbridge", "Lower Weft", "Shuttleworth"];

/// The scenario child's allocated social worker, as the case system records them; allocated to
/// other children of the population too, so a demo social worker has a caseload.
pub const SCENARIO_WORKER: &str = "Demo allocated social worker";

const WORKERS: &[&str] = &[
    SCENARIO_WORKER,
    "Tom Fairweather",
    "Grace Obi",
    "Marek Zielinski",
    "Josie Kendrick",
    "Anil Varma",
    "Bethan Rhys",
];

const GP_PRACTICES: &[&str] = &["Y90101", "Y90102", "Y90103", "Y90104"];

/// Terms whose attendance the school reports, oldest first; the last is the current term to
/// [`REFERENCE_DATE`]. (name, start, possible sessions)
const TERMS: &[(&str, (i32, u32, u32), i32)] = &[
    ("2024/25 Autumn", (2024, 9, 4), 144),
    ("2024/25 Spring", (2025, 1, 6), 118),
    ("2024/25 Summer", (2025, 4, 22), 128),
    ("2025/26 Autumn", (2025, 9, 3), 40),
];

const SUSPENSION_REASONS: &[&str] = &[
    "Persistent disruptive behaviour",
    "Verbal abuse or threatening behaviour against an adult",
    "Physical assault against a pupil",
    "Damage",
    "Use or threat of use of an offensive weapon or prohibited item",
];

const CIN_CATEGORIES: &[&str] = &[
    "Abuse or neglect",
    "Domestic abuse",
    "Family in acute stress",
    "Family dysfunction",
    "Child's disability",
    "Parental illness or disability",
];

const CP_CATEGORIES: &[&str] = &[
    "Neglect",
    "Emotional abuse",
    "Physical abuse",
    "Sexual abuse",
    "Multiple",
];

const LAC_CATEGORIES: &[&str] = &[
    "Voluntary accommodation (s20)",
    "Interim care order",
    "Full care order (s31)",
];

const CASE_NOTES: &[&str] = &[
    "Home visit completed; child seen alone and wishes and feelings recorded.",
    "Strategy discussion held with police, health and school.",
    "Core group meeting: plan reviewed, school attendance discussed.",
    "Telephone call with school designated safeguarding lead; no new concerns this week.",
    "Parent did not attend planned meeting; visit rearranged.",
    "Referral made to family support service.",
];

const LAC_NOTES: &[&str] = &[
    "Placement visit: child settled, contact with birth family continuing.",
    "Looked-after review held; care plan endorsed by the independent reviewing officer.",
];

const OTHER_INCIDENTS: &[(&str, &str)] = &[
    (
        "Missing person",
        "Reported missing from home overnight; found safe next morning.",
    ),
    (
        "Concern for welfare",
        "Found alone in a park late at night.",
    ),
    (
        "Antisocial behaviour",
        "Present when a group was moved on from a shopping centre.",
    ),
    (
        "Theft (victim)",
        "Mobile phone taken on the way home from school.",
    ),
];

const DA_SUMMARIES: &[&str] = &[
    "Verbal argument between adults at the address; neighbours called police.",
    "Assault between adults at the address; one arrest made.",
    "Breach of a non-molestation order at the address.",
];

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn datetime(d: NaiveDate, h: u32, min: u32) -> NaiveDateTime {
    d.and_time(NaiveTime::from_hms_opt(h, min, 0).expect("valid time"))
}

/// Which records a child has, and how each departs from the truth.
#[derive(Default)]
struct Plan {
    school: bool,
    social_care: bool,
    police: bool,
    /// The school records the nickname as the forename.
    school_nickname: bool,
    /// The school keeps the nickname as the preferred name beside the legal forename.
    school_preferred: bool,
    /// A system that misspells the family name.
    misspelt_in: Option<System>,
    /// Systems that record a hyphenated family name differently (spaced, or the second part).
    hyphen_variant_in: Vec<System>,
    /// Systems still holding the address the family moved from.
    old_address_in: Vec<System>,
    /// Systems that never captured the NHS number.
    no_nhs_in: Vec<System>,
    /// Social care never captured the UPN.
    no_upn_at_social_care: bool,
    /// Police recorded the day and month of birth the wrong way round.
    police_dob_swapped: bool,
}

struct Gen {
    rng: StdRng,
    seed: u64,
    /// The cohort's children not yet taken ([`Gen::truth`]), how many of the cohort were
    /// drawn, and how many of those were taken or passed over.
    people: VecDeque<Person>,
    drawn: usize,
    consumed: usize,
    /// Each household's home, once one of its children is drawn.
    homes: HashMap<u32, Address>,
    nhs_numbers: HashSet<String>,
    upns: HashSet<String>,
    local_ids: HashSet<String>,
    next_police_ref: u32,
    next_flag: u32,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            seed,
            people: VecDeque::new(),
            drawn: 0,
            consumed: 0,
            homes: HashMap::new(),
            nhs_numbers: HashSet::new(),
            upns: HashSet::new(),
            local_ids: HashSet::new(),
            next_police_ref: 1,
            next_flag: 1,
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("non-empty list")
    }

    fn nhs_number(&mut self) -> String {
        loop {
            let prefix = format!("999{:06}", self.rng.gen_range(0..1_000_000));
            // At most one check digit fits; none does when the check comes to 10.
            let valid = (0..10)
                .map(|d| format!("{prefix}{d}"))
                .find(|n| NhsNumber::parse(n).is_ok());
            if let Some(n) = valid {
                if self.nhs_numbers.insert(n.clone()) {
                    return n;
                }
            }
        }
    }

    /// A UPN allocated when the child joined Reception, mostly permanent; a few recent arrivals
    /// still carry a temporary one (last character a letter).
    fn upn(&mut self, year_group: i32) -> String {
        let joined = (2025 - year_group).rem_euclid(100);
        loop {
            let serial = self.rng.gen_range(0..1000);
            let mut rest = format!("{LA_CODE}{ESTABLISHMENT}{joined:02}{serial:03}");
            if year_group == 0 && self.rng.gen_bool(0.2) {
                rest.pop();
                rest.push(self.pick(&UPN_ALPHABET[..]) as char);
            }
            let upn = UPN_ALPHABET
                .iter()
                .map(|&check| format!("{}{rest}", check as char))
                .find(|u| Upn::parse(u).is_ok())
                .expect("exactly one check letter fits");
            if self.upns.insert(upn.clone()) {
                return upn;
            }
        }
    }

    fn local_id(&mut self, system: System) -> String {
        loop {
            let id = match system {
                System::Health => format!("pt-{:08x}", self.rng.gen::<u32>()),
                System::School => format!("{}", self.rng.gen_range(10_000..100_000)),
                System::SocialCare => format!("LCS{:06}", self.rng.gen_range(0..1_000_000)),
                System::Police => format!("P{:07}", self.rng.gen_range(0..10_000_000)),
            };
            if self.local_ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn postcode(&mut self) -> String {
        const INWARD: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
        format!(
            "WT{} {}{}{}",
            self.rng.gen_range(1..=9),
            self.rng.gen_range(1..=9),
            self.pick(INWARD) as char,
            self.pick(INWARD) as char
        )
    }

    fn address(&mut self) -> Address {
        Address {
            line: format!("{} {}", self.rng.gen_range(1..120), self.pick(STREETS)),
            town: self.pick(TOWNS).to_string(),
            postcode: self.postcode(),
        }
    }

    fn phone(&mut self) -> String {
        format!("01632 960{:03}", self.rng.gen_range(0..1000))
    }

    /// The truth of the next of the cohort's children aged 2 to 17 ([`cohort::people`]): its
    /// names, birthday, sex and household; a household's children share one home here.
    fn truth(&mut self) -> Truth {
        let (p, birth_date) = loop {
            if let Some(p) = self.people.pop_front() {
                self.consumed += 1;
                if let Some(born) = of_age(&p) {
                    break (p, born);
                }
                continue;
            }
            // Twice as much of the cohort, past the children already taken.
            self.drawn = (self.drawn * 2).max(64);
            self.people = cohort::people(self.seed, self.drawn)
                .into_iter()
                .skip(self.consumed)
                .collect();
        };
        let address = match self.homes.get(&p.household) {
            Some(home) => home.clone(),
            None => {
                let home = self.address();
                self.homes.insert(p.household, home.clone());
                home
            }
        };
        let upn = year_group(birth_date).map(|y| self.upn(y));
        Truth {
            given_name: names::title(&p.given_name),
            family_name: names::title(&p.family_name),
            birth_date,
            sex: if p.female { Sex::Female } else { Sex::Male },
            address,
            nhs_number: self.nhs_number(),
            upn,
        }
    }

    fn random_plan(&mut self, truth: &Truth) -> Plan {
        let school = truth.upn.is_some() && self.rng.gen_bool(0.9);
        let social_care = self.rng.gen_bool(0.4);
        let police = self.rng.gen_bool(if social_care { 0.45 } else { 0.1 });
        let has_nickname = short_form(&truth.given_name).is_some();
        let school_nickname = school && has_nickname && self.rng.gen_bool(0.25);
        let school_preferred = school && has_nickname && !school_nickname && self.rng.gen_bool(0.3);

        let mut others = vec![];
        for (present, s) in [
            (school, System::School),
            (social_care, System::SocialCare),
            (police, System::Police),
        ] {
            if present {
                others.push(s);
            }
        }
        let misspelt_in =
            (!others.is_empty() && self.rng.gen_bool(0.15)).then(|| self.pick(&others));
        let hyphen_variant_in = if truth.family_name.contains('-') {
            others
                .iter()
                .copied()
                .filter(|_| self.rng.gen_bool(0.5))
                .collect()
        } else {
            vec![]
        };
        let mut old_address_in = vec![];
        if school && self.rng.gen_bool(0.15) {
            old_address_in.push(System::School);
        }
        if police && self.rng.gen_bool(0.1) {
            old_address_in.push(System::Police);
        }
        let mut no_nhs_in = vec![];
        for (present, s, p) in [
            (school, System::School, 0.3),
            (social_care, System::SocialCare, 0.08),
            (police, System::Police, 0.35),
        ] {
            if present && self.rng.gen_bool(p) {
                no_nhs_in.push(s);
            }
        }
        let day = truth.birth_date.day();
        let police_dob_swapped =
            police && day <= 12 && day != truth.birth_date.month() && self.rng.gen_bool(0.1);
        Plan {
            school,
            social_care,
            police,
            school_nickname,
            school_preferred,
            misspelt_in,
            hyphen_variant_in,
            old_address_in,
            no_nhs_in,
            no_upn_at_social_care: social_care && self.rng.gen_bool(0.35),
            police_dob_swapped,
        }
    }

    fn identity(
        &mut self,
        truth: &Truth,
        system: System,
        plan: &Plan,
        old: &Address,
    ) -> SourceIdentity {
        let local_id = self.local_id(system);
        let given_name = match short_form(&truth.given_name) {
            Some(short) if system == System::School && plan.school_nickname => short,
            _ => truth.given_name.clone(),
        };
        let mut family_name = truth.family_name.clone();
        if plan.hyphen_variant_in.contains(&system) {
            family_name = if self.rng.gen_bool(0.5) {
                family_name.replace('-', " ")
            } else {
                family_name
                    .rsplit('-')
                    .next()
                    .unwrap_or(&family_name)
                    .to_string()
            };
        }
        if plan.misspelt_in == Some(system) {
            family_name = misspell(&mut self.rng, &family_name);
        }
        let birth_date = if system == System::Police && plan.police_dob_swapped {
            let d = truth.birth_date;
            NaiveDate::from_ymd_opt(d.year(), d.day(), d.month()).unwrap_or(d)
        } else {
            truth.birth_date
        };
        let address = if plan.old_address_in.contains(&system) {
            old.clone()
        } else {
            truth.address.clone()
        };
        let nhs_number = (!plan.no_nhs_in.contains(&system)).then(|| truth.nhs_number.clone());
        let upn = match system {
            System::School => truth.upn.clone(),
            System::SocialCare if !plan.no_upn_at_social_care => truth.upn.clone(),
            _ => None,
        };
        SourceIdentity {
            local_id,
            given_name,
            family_name,
            birth_date,
            sex: truth.sex,
            address,
            nhs_number,
            upn,
        }
    }

    /// Builds the records a plan calls for, with random detail (episodes, attendance,
    /// incidents); pinned children overwrite what they need afterwards.
    fn build(&mut self, key: String, truth: Truth, plan: Plan) -> SimChild {
        let old = self.address();
        let age = age_on(truth.birth_date, REFERENCE_DATE);

        let social_care = plan.social_care.then(|| {
            let identity = self.identity(&truth, System::SocialCare, &plan, &old);
            self.social_care_detail(identity, truth.birth_date)
        });
        let known_to_sc = social_care.as_ref().is_some_and(|s| s.current().is_some());

        let school = plan.school.then(|| {
            let identity = self.identity(&truth, System::School, &plan, &old);
            let year = year_group(truth.birth_date).expect("pupils are of school age");
            let preferred_name = short_form(&truth.given_name).filter(|_| plan.school_preferred);
            let attendance = self.attendance(year, known_to_sc);
            let exclusions = self.exclusions(year, known_to_sc);
            let leaving_date = exclusions
                .iter()
                .find(|e| e.kind == ExclusionKind::Permanent)
                .map(|e| e.start_date);
            let on_roll = leaving_date.is_none();
            let send_status = match self.rng.gen_range(0..100) {
                0..=2 => "EHC plan",
                3..=15 => "SEN support",
                _ => "None",
            };
            SchoolRecord {
                identity,
                preferred_name,
                school_urn: SCHOOL_URN.to_string(),
                on_roll,
                leaving_date,
                year_group: year,
                send_status: send_status.to_string(),
                attendance,
                exclusions,
            }
        });

        let police = plan.police.then(|| {
            let identity = self.identity(&truth, System::Police, &plan, &old);
            self.police_detail(identity, social_care.as_ref())
        });

        let identity = self.identity(&truth, System::Health, &plan, &old);
        let mut flags = vec![];
        if let Some(ep) = social_care.as_ref().and_then(|s| s.current()) {
            let flag = match ep.kind {
                EpisodeKind::ChildProtection => Some((
                    flag_codes::CHILD_PROTECTION,
                    flag_codes::CHILD_PROTECTION_DISPLAY,
                )),
                EpisodeKind::LookedAfter => {
                    Some((flag_codes::LOOKED_AFTER, flag_codes::LOOKED_AFTER_DISPLAY))
                }
                EpisodeKind::ChildInNeed => None,
            };
            // CP-IS coverage is not total: a few plans never reach the health record.
            if let Some((code, display)) = flag.filter(|_| self.rng.gen_bool(0.85)) {
                let text =
                    format!("{display} (notified by local authority children's social care)");
                flags.push(self.flag(code, display, text, ep.start_date));
            }
        }
        if age >= 11 && self.rng.gen_bool(0.15) {
            let start = REFERENCE_DATE - Duration::days(self.rng.gen_range(10..300));
            let flag = if age >= 13 && self.rng.gen_bool(0.5) {
                (
                    flag_codes::SEXUAL_HEALTH,
                    flag_codes::SEXUAL_HEALTH_DISPLAY,
                    "Attended sexual health clinic for contraception advice",
                )
            } else {
                (
                    flag_codes::MENTAL_HEALTH,
                    flag_codes::MENTAL_HEALTH_DISPLAY,
                    "Referred to CAMHS for low mood; first appointment attended",
                )
            };
            flags.push(self.flag(flag.0, flag.1, flag.2.to_string(), start));
        }
        let health = HealthRecord {
            identity,
            gp_ods: self.pick(GP_PRACTICES).to_string(),
            phone: self.phone(),
            restricted: false,
            flags,
        };

        SimChild {
            key,
            truth,
            scenario: false,
            health: Some(health),
            school,
            social_care,
            police,
        }
    }

    fn flag(
        &mut self,
        code: &'static str,
        display: &'static str,
        text: String,
        start: NaiveDate,
    ) -> HealthFlag {
        let id = format!("flag-{:05}", self.next_flag);
        self.next_flag += 1;
        HealthFlag {
            id,
            code: code.to_string(),
            display: display.to_string(),
            text,
            start,
        }
    }

    fn attendance(&mut self, year_group: i32, known_to_sc: bool) -> Vec<TermAttendance> {
        let base: f64 = if known_to_sc {
            self.rng.gen_range(0.80..0.97)
        } else {
            self.rng.gen_range(0.88..0.995)
        };
        // Reception pupils joined this term; everyone else was here last year.
        let terms = if year_group == 0 {
            &TERMS[TERMS.len() - 1..]
        } else {
            TERMS
        };
        terms
            .iter()
            .map(|(term, (y, m, d), possible)| {
                let rate = (base + self.rng.gen_range(-0.03..0.03)).clamp(0.5, 1.0);
                TermAttendance {
                    term: term.to_string(),
                    term_start: date(*y, *m, *d),
                    possible_sessions: *possible,
                    attended_sessions: (f64::from(*possible) * rate).round() as i32,
                }
            })
            .collect()
    }

    fn exclusions(&mut self, year_group: i32, known_to_sc: bool) -> Vec<Exclusion> {
        if year_group < 5 || !self.rng.gen_bool(if known_to_sc { 0.15 } else { 0.05 }) {
            return vec![];
        }
        let mut out: Vec<Exclusion> = (0..self.rng.gen_range(1..=2))
            .map(|_| Exclusion {
                kind: ExclusionKind::Suspension,
                start_date: REFERENCE_DATE - Duration::days(self.rng.gen_range(20..380)),
                days: self.rng.gen_range(1..=5),
                reason: self.pick(SUSPENSION_REASONS).to_string(),
            })
            .collect();
        if self.rng.gen_bool(0.05) {
            out.push(Exclusion {
                kind: ExclusionKind::Permanent,
                start_date: REFERENCE_DATE - Duration::days(self.rng.gen_range(1..15)),
                days: 0,
                reason: self.pick(SUSPENSION_REASONS).to_string(),
            });
        }
        out.sort_by_key(|e| e.start_date);
        out
    }

    fn social_care_detail(
        &mut self,
        identity: SourceIdentity,
        birth: NaiveDate,
    ) -> SocialCareRecord {
        // Referrals start after birth and at most three years back.
        let earliest = birth.max(REFERENCE_DATE - Duration::days(3 * 365));
        let span = (REFERENCE_DATE - earliest).num_days().max(60);
        let first = earliest + Duration::days(self.rng.gen_range(0..span - 30));
        let cin = |end: Option<NaiveDate>, category: &str| Episode {
            kind: EpisodeKind::ChildInNeed,
            start_date: first,
            end_date: end,
            category: category.to_string(),
        };
        let closed = self.rng.gen_bool(0.15);
        let kind = match self.rng.gen_range(0..100) {
            0..=54 => EpisodeKind::ChildInNeed,
            55..=79 => EpisodeKind::ChildProtection,
            _ => EpisodeKind::LookedAfter,
        };
        let cin_category = self.pick(CIN_CATEGORIES);
        let mut episodes = vec![];
        let step = first
            + Duration::days(
                self.rng
                    .gen_range(14..=((REFERENCE_DATE - first).num_days().max(15))),
            );
        match kind {
            EpisodeKind::ChildInNeed => episodes.push(cin(closed.then_some(step), cin_category)),
            EpisodeKind::ChildProtection | EpisodeKind::LookedAfter => {
                let step = step.min(REFERENCE_DATE - Duration::days(7));
                episodes.push(cin(Some(step), cin_category));
                let category = if kind == EpisodeKind::ChildProtection {
                    self.pick(CP_CATEGORIES)
                } else {
                    self.pick(LAC_CATEGORIES)
                };
                episodes.push(Episode {
                    kind,
                    start_date: step,
                    end_date: closed.then(|| (step + Duration::days(180)).min(REFERENCE_DATE)),
                    category: category.to_string(),
                });
            }
        }
        let allocation = (!closed).then(|| {
            let team = match kind {
                EpisodeKind::ChildInNeed => "Child in Need Team",
                EpisodeKind::ChildProtection => "Child Protection Team",
                EpisodeKind::LookedAfter => "Children in Care Team",
            };
            Allocation {
                worker: self.pick(WORKERS).to_string(),
                team: team.to_string(),
                phone: self.phone(),
            }
        });
        let span = (REFERENCE_DATE - first).num_days().max(1);
        let mut case_notes: Vec<CaseNote> = (0..self.rng.gen_range(1..=4))
            .map(|_| {
                let pool = if kind == EpisodeKind::LookedAfter && self.rng.gen_bool(0.5) {
                    LAC_NOTES
                } else {
                    CASE_NOTES
                };
                CaseNote {
                    noted_on: first + Duration::days(self.rng.gen_range(0..span)),
                    note: self.pick(pool).to_string(),
                }
            })
            .collect();
        case_notes.sort_by_key(|n| n.noted_on);
        SocialCareRecord {
            identity,
            episodes,
            allocation,
            case_notes,
        }
    }

    fn police_ref(&mut self, on: NaiveDate) -> String {
        let r = format!("WTC-{}-{:04}", on.format("%Y%m%d"), self.next_police_ref);
        self.next_police_ref += 1;
        r
    }

    fn police_detail(
        &mut self,
        identity: SourceIdentity,
        sc: Option<&SocialCareRecord>,
    ) -> PoliceRecord {
        let home = format!("{}, {}", identity.address.line, identity.address.town);
        let da_household = sc.is_some_and(|s| {
            s.episodes
                .iter()
                .any(|e| e.category == "Domestic abuse" || e.category == "Emotional abuse")
        });
        let n_da = if da_household || self.rng.gen_bool(0.5) {
            self.rng.gen_range(1..=2)
        } else {
            0
        };
        let mut domestic_abuse: Vec<DomesticAbuse> = (0..n_da)
            .map(|_| {
                let day = REFERENCE_DATE - Duration::days(self.rng.gen_range(2..365));
                let hour = self.pick(&[19, 20, 21, 22, 23, 0, 1, 2]);
                DomesticAbuse {
                    reference: self.police_ref(day),
                    occurred_at: datetime(day, hour, self.rng.gen_range(0..60)),
                    location: home.clone(),
                    postcode: identity.address.postcode.clone(),
                    child_present: self.rng.gen_bool(0.6),
                    risk: self.pick(&["standard", "medium", "high"]).to_string(),
                    summary: self.pick(DA_SUMMARIES).to_string(),
                }
            })
            .collect();
        domestic_abuse.sort_by_key(|d| d.occurred_at);
        let n_other = if n_da == 0 {
            self.rng.gen_range(1..=2)
        } else {
            self.rng.gen_range(0..=1)
        };
        let mut incidents: Vec<Incident> = (0..n_other)
            .map(|_| {
                let day = REFERENCE_DATE - Duration::days(self.rng.gen_range(2..500));
                let (kind, summary) = self.pick(OTHER_INCIDENTS);
                Incident {
                    reference: self.police_ref(day),
                    occurred_at: datetime(
                        day,
                        self.rng.gen_range(8..23),
                        self.rng.gen_range(0..60),
                    ),
                    location: format!("{}, {}", self.pick(STREETS), self.pick(TOWNS)),
                    kind: kind.to_string(),
                    summary: summary.to_string(),
                    child_present: true,
                }
            })
            .collect();
        incidents.sort_by_key(|i| i.occurred_at);
        PoliceRecord {
            identity,
            incidents,
            domestic_abuse,
        }
    }

    fn random_child(&mut self, key: String) -> SimChild {
        let truth = self.truth();
        let plan = self.random_plan(&truth);
        self.build(key, truth, plan)
    }

    /// The children of [`generate_with_households`], in key order of the constants above.
    fn household(&mut self) -> Vec<SimChild> {
        let twins_born = date(2015, 9, 14);
        let girl = self.pinned_truth("Isla", "Ashworth", twins_born, Sex::Female);
        let home = girl.address.clone();
        let in_family = |mut t: Truth| {
            t.address = home.clone();
            t
        };
        let boy = in_family(self.pinned_truth("Finn", "Ashworth", twins_born, Sex::Male));
        let brother = in_family(self.pinned_truth("Noah", "Ashworth", date(2012, 4, 2), Sex::Male));
        let stranger = self.pinned_truth("Maya", "Okafor", twins_born, Sex::Female);
        let school_without_nhs = Plan {
            school: true,
            no_nhs_in: vec![System::School],
            ..Plan::default()
        };
        let police_without_nhs = || Plan {
            police: true,
            no_nhs_in: vec![System::Police],
            ..Plan::default()
        };
        let mut girl = self.build(
            TWIN_GIRL.into(),
            girl,
            Plan {
                school: true,
                police: true,
                no_nhs_in: vec![System::School, System::Police],
                ..Plan::default()
            },
        );
        // The near-miss: the police wrote only her initial.
        if let Some(p) = girl.police.as_mut() {
            p.identity.given_name = "I".into();
        }
        let boy = self.build(TWIN_BOY.into(), boy, school_without_nhs);
        let brother = self.build(
            OLDER_BROTHER.into(),
            brother,
            Plan {
                school: true,
                ..Plan::default()
            },
        );
        let stranger = self.build(SAME_BIRTHDAY.into(), stranger, police_without_nhs());
        let namesakes_born = date(2011, 5, 20);
        let namesake = self.pinned_truth("Olivia", "Wood", namesakes_born, Sex::Female);
        let other = self.pinned_truth("Olivia", "Wood", namesakes_born, Sex::Female);
        let mut namesake = self.build(NAMESAKE.into(), namesake, police_without_nhs());
        if let Some(p) = namesake.police.as_mut() {
            let address = &mut p.identity.address;
            address.postcode.clear();
            if let Some((_, street)) = address.line.split_once(' ') {
                address.line = street.to_string();
            }
        }
        let other = self.build(OTHER_NAMESAKE.into(), other, Plan::default());
        vec![girl, boy, brother, stranger, namesake, other]
    }

    /// The truth of a pinned child: fixed name, birth date and sex; address and identifiers drawn
    /// in the same order as for any child, so the rest of the population stays as it was.
    fn pinned_truth(
        &mut self,
        given: &str,
        family: &str,
        birth_date: NaiveDate,
        sex: Sex,
    ) -> Truth {
        Truth {
            given_name: given.into(),
            family_name: family.into(),
            birth_date,
            sex,
            address: self.address(),
            nhs_number: self.nhs_number(),
            upn: year_group(birth_date).map(|y| self.upn(y)),
        }
    }

    /// A child in all four systems, linkable by NHS number everywhere, whom the school knows by
    /// a nickname and a misspelt family name.
    fn pinned_linkable(&mut self, key: String) -> SimChild {
        let birth_date = date(2014, 2, 3);
        let truth = self.pinned_truth("William", "Johnson", birth_date, Sex::Male);
        let plan = Plan {
            school: true,
            social_care: true,
            police: true,
            school_nickname: true,
            misspelt_in: Some(System::School),
            ..Plan::default()
        };
        self.build(key, truth, plan)
    }

    /// A child in all four systems whose police record lacks the NHS number and misspells the
    /// family name, whose school record lacks the NHS number and still has the old address, and
    /// whose social care record lacks the UPN; health holds a sensitive (CAMHS) flag.
    fn pinned_probabilistic(&mut self, key: String) -> SimChild {
        let birth_date = date(2016, 6, 21);
        let truth = self.pinned_truth("Eleanor", "Thompson", birth_date, Sex::Female);
        let plan = Plan {
            school: true,
            social_care: true,
            police: true,
            misspelt_in: Some(System::Police),
            old_address_in: vec![System::School],
            no_nhs_in: vec![System::School, System::Police],
            no_upn_at_social_care: true,
            ..Plan::default()
        };
        let mut child = self.build(key, truth, plan);
        // Guarantees a pupil with sensitive health information, whatever the seed.
        let flag = self.flag(
            flag_codes::MENTAL_HEALTH,
            flag_codes::MENTAL_HEALTH_DISPLAY,
            "Referred to CAMHS for anxiety; assessment appointment attended".to_string(),
            date(2025, 6, 9),
        );
        let health = child.health.as_mut().expect("health record");
        health.flags.retain(|f| f.code != flag_codes::MENTAL_HEALTH);
        health.flags.push(flag);
        child
    }

    /// The DESIGN.md scenario: a 14-year-old known to social care for domestic abuse, whose
    /// attendance has fallen below 90 %, with a police domestic incident at home last night.
    fn scenario(&mut self, key: String) -> SimChild {
        let birth_date = date(2011, 5, 14);
        let truth = Truth {
            given_name: "Ruby".into(),
            family_name: "Calder".into(),
            birth_date,
            sex: Sex::Female,
            address: Address {
                line: "27 Shuttle Lane".into(),
                town: "Weftbridge".into(),
                postcode: "WT3 5QP".into(),
            },
            nhs_number: self.nhs_number(),
            upn: year_group(birth_date).map(|y| self.upn(y)),
        };
        let plan = Plan {
            school: true,
            social_care: true,
            police: true,
            ..Plan::default()
        };
        let mut child = self.build(key, truth, plan);
        child.scenario = true;

        let health = child.health.as_mut().expect("health record");
        health.flags.clear();

        let school = child.school.as_mut().expect("school record");
        let attended = [136, 108, 110, 32];
        school.attendance = TERMS
            .iter()
            .zip(attended)
            .map(|((term, (y, m, d), possible), attended)| TermAttendance {
                term: term.to_string(),
                term_start: date(*y, *m, *d),
                possible_sessions: *possible,
                attended_sessions: attended,
            })
            .collect();
        school.exclusions.clear();
        school.on_roll = true;
        school.leaving_date = None;
        school.send_status = "None".into();

        let sc = child.social_care.as_mut().expect("social care record");
        sc.episodes = vec![Episode {
            kind: EpisodeKind::ChildInNeed,
            start_date: date(2025, 1, 20),
            end_date: None,
            category: "Domestic abuse".into(),
        }];
        sc.allocation = Some(Allocation {
            worker: SCENARIO_WORKER.into(),
            team: "Child in Need Team".into(),
            phone: "01632 960418".into(),
        });
        sc.case_notes = vec![
            CaseNote {
                noted_on: date(2025, 1, 20),
                note: "Referral from police following a domestic incident at the family home; \
                       child present. Assessment opened."
                    .into(),
            },
            CaseNote {
                noted_on: date(2025, 3, 11),
                note: "Child in need plan agreed: domestic abuse support for mother, school to \
                       monitor attendance and wellbeing."
                    .into(),
            },
            CaseNote {
                noted_on: date(2025, 7, 2),
                note: "Review: arguments at home continuing; child says she is tired at school."
                    .into(),
            },
        ];

        let police = child.police.as_mut().expect("police record");
        let home = format!(
            "{}, {}",
            police.identity.address.line, police.identity.address.town
        );
        let postcode = police.identity.address.postcode.clone();
        police.incidents.clear();
        police.domestic_abuse = vec![
            DomesticAbuse {
                reference: self.police_ref(date(2025, 1, 12)),
                occurred_at: datetime(date(2025, 1, 12), 22, 15),
                location: home.clone(),
                postcode: postcode.clone(),
                child_present: true,
                risk: "medium".into(),
                summary: "Assault between adults at the address; child present; referred to \
                          children's social care."
                    .into(),
            },
            DomesticAbuse {
                reference: self.police_ref(date(2025, 9, 30)),
                occurred_at: datetime(date(2025, 9, 30), 23, 40),
                location: home,
                postcode,
                child_present: true,
                risk: "high".into(),
                summary: "Verbal and physical altercation between adults at the address; \
                          child present in the house."
                    .into(),
            },
        ];
        child
    }

    /// Marks two or three children (never a pinned one) restricted in health, as PDS does for
    /// families whose whereabouts must not be disclosed; one of them, where there is one, a
    /// pupil on the school's roll, so that what the school's staff are shown of a restricted
    /// child can be seen whatever the names drawn.
    fn restrict_some(&mut self, children: &mut [SimChild]) {
        let candidates: Vec<usize> = (3..children.len()).collect();
        let wanted = if children.len() >= 40 { 3 } else { 2 };
        let k = candidates.len().min(wanted);
        let pupils: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| children[i].school.as_ref().is_some_and(|s| s.on_roll))
            .collect();
        let mut chosen: Vec<usize> = pupils.choose(&mut self.rng).copied().into_iter().collect();
        let rest: Vec<usize> = candidates
            .into_iter()
            .filter(|i| !chosen.contains(i))
            .collect();
        chosen.extend(rest.choose_multiple(&mut self.rng, k - chosen.len().min(k)));
        for i in chosen {
            if let Some(h) = children[i].health.as_mut() {
                h.restricted = true;
            }
        }
    }
}

/// A cohort child's birth date, if the child is of an age the partner systems hold (2 to 17).
fn of_age(p: &Person) -> Option<NaiveDate> {
    let (y, m, d) = p.birth_date;
    NaiveDate::from_ymd_opt(y, m, d).filter(|b| (2..=17).contains(&age_on(*b, REFERENCE_DATE)))
}

/// The short form a school might write for a given name, capitalised as the name is.
fn short_form(given: &str) -> Option<String> {
    names::short_form(&given.to_lowercase()).map(names::title)
}

/// A clerk's slip in a family name, in its last part, as one typing the name would most often
/// make it. A slip can land on the same letter; drawn again then, a few times at most (a
/// name of three letters or fewer is left as it is).
fn misspell(rng: &mut StdRng, family: &str) -> String {
    let (kept, last) = match family.rfind(['-', ' ']) {
        Some(i) => family.split_at(i + 1),
        None => ("", family),
    };
    let mut slip = names::typo(rng, last);
    for _ in 0..8 {
        if slip != last {
            break;
        }
        slip = names::typo(rng, last);
    }
    format!("{kept}{slip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The children are the cohort's: brothers and sisters share a family name and a home, and
    /// twins (same birthday and home, different given names) turn up as they do in the cohort.
    #[test]
    fn the_children_come_in_the_cohorts_households() {
        let pop = generate(7, 400);
        let drawn: Vec<&SimChild> = pop.children.iter().skip(3).collect();
        let home = |c: &SimChild| (c.truth.address.clone(), c.truth.family_name.clone());
        let mut siblings = 0;
        let mut twins = 0;
        for (i, a) in drawn.iter().enumerate() {
            for b in &drawn[i + 1..] {
                if home(a) == home(b) && a.truth.given_name != b.truth.given_name {
                    if a.truth.birth_date == b.truth.birth_date {
                        twins += 1;
                    } else {
                        siblings += 1;
                    }
                }
            }
        }
        assert!(siblings >= 50, "{siblings} pairs of brothers and sisters");
        assert!(twins >= 1, "{twins} pairs of twins");
        // The first child drawn is the cohort's first of an age to be here.
        let first = pop.by_key("sim-0003").expect("the first drawn child");
        let person = crate::cohort::people(7, 64)
            .into_iter()
            .find(|p| of_age(p).is_some())
            .expect("a child of an age to be here");
        assert_eq!(
            (
                first.truth.given_name.clone(),
                first.truth.family_name.clone(),
                first.truth.sex == Sex::Female
            ),
            (
                names::title(&person.given_name),
                names::title(&person.family_name),
                person.female
            )
        );
    }

    #[test]
    fn the_household_cases_follow_the_same_children() {
        let plain = generate(7, 30);
        let with = generate_with_households(7, 30);
        assert_eq!(with.children[..30], plain.children[..]);
        let child = |key| with.by_key(key).expect(key);
        let (girl, boy, brother, stranger) = (
            child(TWIN_GIRL),
            child(TWIN_BOY),
            child(OLDER_BROTHER),
            child(SAME_BIRTHDAY),
        );
        assert_eq!(girl.truth.birth_date, boy.truth.birth_date);
        assert_eq!(girl.truth.address, boy.truth.address);
        assert_eq!(girl.truth.address, brother.truth.address);
        assert_ne!(girl.truth.sex, boy.truth.sex);
        assert_ne!(brother.truth.birth_date, girl.truth.birth_date);
        assert_eq!(stranger.truth.birth_date, girl.truth.birth_date);
        assert_ne!(stranger.truth.address.postcode, girl.truth.address.postcode);
        for c in [girl, boy] {
            let school = c.identity(System::School).expect("school record");
            assert!(school.nhs_number.is_none(), "linked by demographics only");
        }
        let police = girl.identity(System::Police).expect("the near-miss");
        assert_eq!(
            (police.given_name.as_str(), &police.nhs_number),
            ("I", &None)
        );
        let police = stranger.identity(System::Police).expect("police record");
        assert!(police.nhs_number.is_none());
        let (namesake, other) = (child(NAMESAKE), child(OTHER_NAMESAKE));
        assert_eq!(
            (
                &namesake.truth.given_name,
                &namesake.truth.family_name,
                namesake.truth.birth_date
            ),
            (
                &other.truth.given_name,
                &other.truth.family_name,
                other.truth.birth_date
            )
        );
        assert_ne!(namesake.truth.address, other.truth.address);
        let police = namesake.identity(System::Police).expect("police record");
        assert!(police.nhs_number.is_none() && police.address.postcode.is_empty());
        let (street, home) = (&police.address.line, &namesake.truth.address.line);
        assert!(!street.starts_with(|c: char| c.is_ascii_digit()));
        assert!(home.ends_with(&format!(" {street}")), "{street} / {home}");
    }

    #[test]
    fn same_seed_same_population() {
        assert_eq!(generate(7, 60), generate(7, 60));
        assert_ne!(generate(7, 60), generate(8, 60));
    }

    #[test]
    fn every_identifier_passes_its_check() {
        for seed in 0..5 {
            let pop = generate(seed, 200);
            let mut nhs = HashSet::new();
            let mut upns = HashSet::new();
            for c in &pop.children {
                assert!(NhsNumber::parse(&c.truth.nhs_number).is_ok());
                assert!(
                    nhs.insert(c.truth.nhs_number.clone()),
                    "NHS numbers are unique"
                );
                if let Some(u) = &c.truth.upn {
                    assert!(Upn::parse(u).is_ok(), "UPN check letter");
                    assert!(upns.insert(u.clone()), "UPNs are unique");
                }
                for s in System::ALL {
                    if let Some(i) = c.identity(s) {
                        if let Some(n) = &i.nhs_number {
                            assert!(NhsNumber::parse(n).is_ok());
                        }
                        if let Some(u) = &i.upn {
                            assert!(Upn::parse(u).is_ok());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ages_and_presence_are_plausible() {
        let pop = generate(42, 400);
        let n = pop.children.len() as f64;
        for c in &pop.children {
            assert!((2..=17).contains(&c.age()), "age {}", c.age());
            assert!(c.health.is_some(), "everyone is registered with health");
            assert_eq!(
                c.truth.upn.is_some(),
                year_group(c.truth.birth_date).is_some()
            );
            if let Some(s) = &c.school {
                assert!((0..=13).contains(&s.year_group));
                assert!(!s.attendance.is_empty());
            }
        }
        let share = |s: System| pop.children.iter().filter(|c| c.present_in(s)).count() as f64 / n;
        assert!(share(System::School) > 0.6, "most are at school");
        assert!((0.3..0.5).contains(&share(System::SocialCare)));
        assert!((0.15..0.35).contains(&share(System::Police)));
        assert!(pop.children.iter().any(|c| c
            .school
            .as_ref()
            .is_some_and(|s| s.identity.nhs_number.is_none())));
        assert!(pop.children.iter().any(|c| {
            c.truth.upn.is_some()
                && c.social_care
                    .as_ref()
                    .is_some_and(|s| s.identity.upn.is_none())
        }));
        assert!(pop
            .children
            .iter()
            .any(|c| c
                .school
                .as_ref()
                .is_some_and(|s| s.identity.address.postcode != c.truth.address.postcode)));
        assert!(pop.health_records().any(|h| h
            .flags
            .iter()
            .any(|f| f.code == flag_codes::CHILD_PROTECTION)));
        assert!(pop
            .health_records()
            .any(|h| h.flags.iter().any(
                |f| f.code == flag_codes::SEXUAL_HEALTH || f.code == flag_codes::MENTAL_HEALTH
            )));
    }

    #[test]
    fn pinned_children_exist_for_any_seed() {
        for seed in [0, 1, 99, u64::MAX] {
            let pop = generate(seed, 50);
            let s = pop.scenario().expect("scenario child");
            assert_eq!(s.age(), 14);
            assert!(s.in_all_four());
            let sc = s.social_care.as_ref().unwrap();
            assert_eq!(sc.current().unwrap().category, "Domestic abuse");
            let last = s
                .school
                .as_ref()
                .unwrap()
                .attendance
                .last()
                .unwrap()
                .percent();
            assert!(last < 90.0, "attendance {last}");
            let da = s.police.as_ref().unwrap().domestic_abuse.last().unwrap();
            assert!(da.child_present);
            assert_eq!(da.occurred_at.date(), REFERENCE_DATE.pred_opt().unwrap());

            let d = pop.linkable_disagreement().expect("linkable disagreement");
            let (a, b) = d.family_name_disagreement().unwrap();
            assert_ne!(
                d.identity(a).unwrap().family_name,
                d.identity(b).unwrap().family_name
            );
            let school = d.school.as_ref().unwrap();
            assert_ne!(school.identity.given_name, d.truth.given_name);

            let p = pop.probabilistic_only().expect("probabilistic child");
            assert!(p.police.as_ref().unwrap().identity.nhs_number.is_none());
            assert!(p.school.is_some());
            let flags = &p.health.as_ref().unwrap().flags;
            assert!(flags.iter().any(|f| !flag_codes::is_cp(&f.code)));

            let r = pop.restricted();
            assert!((2..=3).contains(&r.len()), "{} restricted", r.len());
            assert!(r.iter().all(|c| !c.scenario));
        }
    }

    #[test]
    fn misspellings_differ_in_the_last_part() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_ne!(misspell(&mut rng, "Johnson"), "Johnson");
            let double = misspell(&mut rng, "Okafor-Walsh");
            assert!(double.starts_with("Okafor-") && double != "Okafor-Walsh");
        }
    }

    #[test]
    fn the_scenario_worker_has_a_caseload() {
        let pop = generate(7, 50);
        let caseload = pop
            .social_care_records()
            .filter(|r| {
                r.allocation
                    .as_ref()
                    .is_some_and(|a| a.worker == SCENARIO_WORKER)
            })
            .count();
        assert!(caseload > CASELOAD, "{caseload} children allocated");
    }
}
