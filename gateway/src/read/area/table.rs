//! The area report's figures from pupils' facts: counted by term for the whole authority, each
//! school and each area, then put through disclosure control ([`weft_sdc`]) as one hierarchy, so
//! no table published beside another gives a withheld cell away.
//!
//! The unit counted is an enrolment — a pupil on one school's roll, as one source records them
//! — as the DfE's school-level statistics count it: a child who moved school in a term counts
//! at each school, and the authority's figure is the sum of its schools' (and of its areas'), so
//! the totals are the margins the suppression protects.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use weft_sdc::{suppress, Constraint};

/// An academic term: the academic year it falls in (by its first calendar year) and which of
/// the three terms it is. Orders oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Term {
    pub year: i32,
    /// 1 autumn, 2 spring, 3 summer.
    pub term: u8,
}

impl Term {
    /// A term as MIS exports name it: `Autumn 2024`, `Spring 2025`, `2024/25 Summer`,
    /// `AUT 2024`, `2024-25 spring`. A season word (or its first three letters) and a year; a
    /// lone calendar year is the term's own (`Spring 2025` is in 2024/25), an academic year's
    /// `2024/25` its first year. `None` for anything else.
    pub fn parse(raw: &str) -> Option<Term> {
        let lower = raw.to_ascii_lowercase();
        let term = if lower.contains("aut") {
            1
        } else if lower.contains("spr") {
            2
        } else if lower.contains("sum") {
            3
        } else {
            return None;
        };
        let digits: Vec<&str> = lower
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .collect();
        let first = digits.first()?;
        let year: i32 = match first.len() {
            4 => first.parse().ok()?,
            2 => 2000 + first.parse::<i32>().ok()?,
            _ => return None,
        };
        let academic = digits.len() >= 2;
        let year = if academic || term == 1 {
            year
        } else {
            year - 1
        };
        (1990..=2100).contains(&year).then_some(Term { year, term })
    }

    /// The term a date falls in: September to December autumn, January to March spring, April
    /// to August summer. Term dates differ between schools and Easter moves; a suspension in
    /// the week either side of a boundary may land in the neighbouring term.
    pub fn of_date(date: &str) -> Option<Term> {
        let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        use chrono::Datelike;
        let (y, m) = (d.year(), d.month());
        Some(match m {
            9..=12 => Term { year: y, term: 1 },
            1..=3 => Term {
                year: y - 1,
                term: 2,
            },
            _ => Term {
                year: y - 1,
                term: 3,
            },
        })
    }

    /// `2024/25 autumn`.
    pub fn label(&self) -> String {
        let season = match self.term {
            1 => "autumn",
            2 => "spring",
            _ => "summer",
        };
        format!("{}/{:02} {season}", self.year, (self.year + 1) % 100)
    }
}

/// What the report needs of one enrolment.
#[derive(Debug, Clone, Default)]
pub struct Pupil {
    /// The source it came from, as an index into the report's education sources.
    pub source: usize,
    pub school: String,
    pub area: String,
    pub known_to_social_care: bool,
    /// Possible and attended sessions per term.
    pub attendance: Vec<(Term, i64, i64)>,
    /// Suspensions (`false`) and permanent exclusions (`true`) by the term they started in.
    pub exclusions: Vec<(Term, bool)>,
}

/// The level a row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The whole local authority.
    Authority,
    School,
    Area,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Authority => "authority",
            Level::School => "school",
            Level::Area => "area",
        }
    }
}

/// The counts of one row, before disclosure control.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    pupils: u64,
    possible: i64,
    attended: i64,
    persistent: u64,
    persistent_known: u64,
    suspended: u64,
    excluded: u64,
    excluded_known: u64,
    /// Which education sources contributed (bit per source; sources past 63 share bit 63).
    sources: u64,
}

/// The count measures, each its own table under disclosure control.
pub const COUNTS: [Measure; 6] = [
    Measure::Pupils,
    Measure::PersistentAbsentees,
    Measure::PersistentAbsenteesKnownToSocialCare,
    Measure::SuspendedPupils,
    Measure::PermanentlyExcludedPupils,
    Measure::SuspendedOrExcludedKnownToSocialCare,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    Pupils,
    PersistentAbsentees,
    PersistentAbsenteesKnownToSocialCare,
    SuspendedPupils,
    PermanentlyExcludedPupils,
    SuspendedOrExcludedKnownToSocialCare,
}

impl Measure {
    fn of(self, a: &Acc) -> u64 {
        match self {
            Measure::Pupils => a.pupils,
            Measure::PersistentAbsentees => a.persistent,
            Measure::PersistentAbsenteesKnownToSocialCare => a.persistent_known,
            Measure::SuspendedPupils => a.suspended,
            Measure::PermanentlyExcludedPupils => a.excluded,
            Measure::SuspendedOrExcludedKnownToSocialCare => a.excluded_known,
        }
    }
}

/// A published figure: its value, or withheld. Whether a withheld count was small or withheld
/// to protect another is not said: that would say which cells are from 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figure {
    pub value: Option<Number>,
    pub suppressed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Number {
    Count(u64),
    Rate(f64),
}

impl Figure {
    fn count(v: u64, shown: bool) -> Figure {
        Figure {
            value: shown.then_some(Number::Count(v)),
            suppressed: !shown,
        }
    }

    /// A percentage to one decimal place, withheld when any count it is derived from is, or
    /// when there is nothing to divide by.
    fn rate(num: i64, den: i64, shown: bool) -> Figure {
        let shown = shown && den > 0;
        Figure {
            value: shown.then(|| Number::Rate((num as f64 * 1000.0 / den as f64).round() / 10.0)),
            suppressed: !shown,
        }
    }

    pub fn csv(&self) -> String {
        match self.value {
            // "c", as the DfE and ONS mark a confidential cell.
            None => "c".into(),
            Some(Number::Count(n)) => n.to_string(),
            Some(Number::Rate(r)) => format!("{r:.1}"),
        }
    }
}

/// One row of the report, after disclosure control.
#[derive(Debug, Clone)]
pub struct Row {
    pub level: Level,
    pub key: String,
    pub term: Term,
    pub pupils: Figure,
    pub attendance_rate: Figure,
    pub persistent_absentees: Figure,
    pub persistent_absence_rate: Figure,
    pub persistent_absentees_known_to_social_care: Figure,
    pub suspended_pupils: Figure,
    pub permanently_excluded_pupils: Figure,
    pub suspended_or_excluded_known_to_social_care: Figure,
    /// The education sources whose data the row counts (bit per source).
    pub sources: u64,
}

/// The whole table, every row at every level, suppressed as one.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub rows: Vec<Row>,
    pub terms: Vec<Term>,
    /// Cells withheld, over all count measures.
    pub suppressed: usize,
}

/// Persistent absence: attendance below 90 % of possible sessions in the term.
fn persistent(possible: i64, attended: i64) -> bool {
    possible > 0 && attended * 10 < possible * 9
}

/// Counts `pupils` into rows and applies disclosure control with `threshold`.
pub fn build(pupils: &[Pupil], threshold: u64) -> Table {
    // Terms are numbered densely from the oldest, and schools and areas interned, so that the
    // counting is array arithmetic: an authority's report runs to millions of pupil-terms.
    let years = pupils
        .iter()
        .flat_map(|p| {
            p.attendance
                .iter()
                .map(|a| a.0.year)
                .chain(p.exclusions.iter().map(|e| e.0.year))
        })
        .fold(None, |acc: Option<(i32, i32)>, y| {
            Some(acc.map_or((y, y), |(lo, hi)| (lo.min(y), hi.max(y))))
        });
    let Some((first, last)) = years else {
        return Table::default();
    };
    let n_terms = ((last - first + 1) * 3) as usize;
    let slot = |t: Term| ((t.year - first) * 3 + i32::from(t.term) - 1) as usize;
    let term_of = |i: usize| Term {
        year: first + (i / 3) as i32,
        term: (i % 3) as u8 + 1,
    };
    let mut names: Vec<(Level, &str)> = vec![(Level::Authority, "")];
    let mut ids: HashMap<(Level, &str), usize> = HashMap::new();
    let mut acc: Vec<Acc> = vec![Acc::default(); n_terms];
    let mut present: Vec<bool> = vec![false; n_terms];
    // One pupil's terms, merged (two rows for one term add up), reused across pupils.
    let mut by_term: Vec<PupilTerm> = vec![PupilTerm::default(); n_terms];
    let mut touched: Vec<usize> = Vec::new();
    for p in pupils {
        for &(t, possible, attended) in &p.attendance {
            let i = slot(t);
            if !by_term[i].seen {
                touched.push(i);
                by_term[i].seen = true;
            }
            by_term[i].possible += possible;
            by_term[i].attended += attended;
        }
        for &(t, permanent) in &p.exclusions {
            let i = slot(t);
            if !by_term[i].seen {
                touched.push(i);
                by_term[i].seen = true;
            }
            if permanent {
                by_term[i].excluded = true;
            } else {
                by_term[i].suspended = true;
            }
        }
        let mut rows = [0usize; 3];
        for (n, (level, key)) in [
            (Level::School, p.school.as_str()),
            (Level::Area, p.area.as_str()),
        ]
        .into_iter()
        .enumerate()
        {
            let next = names.len();
            let r = *ids.entry((level, key)).or_insert(next);
            if r == next {
                names.push((level, key));
                acc.extend(std::iter::repeat_n(Acc::default(), n_terms));
                present.extend(std::iter::repeat_n(false, n_terms));
            }
            rows[n + 1] = r;
        }
        let bit = 1u64 << p.source.min(63);
        for &i in &touched {
            let f = by_term[i];
            for r in rows {
                let cell = r * n_terms + i;
                present[cell] = true;
                let a = &mut acc[cell];
                a.sources |= bit;
                if f.possible > 0 {
                    a.pupils += 1;
                    a.possible += f.possible;
                    a.attended += f.attended;
                    if persistent(f.possible, f.attended) {
                        a.persistent += 1;
                        a.persistent_known += u64::from(p.known_to_social_care);
                    }
                }
                a.suspended += u64::from(f.suspended);
                a.excluded += u64::from(f.excluded);
                a.excluded_known +=
                    u64::from((f.suspended || f.excluded) && p.known_to_social_care);
            }
            by_term[i] = PupilTerm::default();
        }
        touched.clear();
    }
    let mut terms_seen: BTreeMap<Term, ()> = BTreeMap::new();
    let mut acc_map: HashMap<(Level, &str, Term), Acc> = HashMap::new();
    for (r, &(level, key)) in names.iter().enumerate() {
        for i in 0..n_terms {
            if present[r * n_terms + i] {
                terms_seen.insert(term_of(i), ());
                acc_map.insert((level, key, term_of(i)), acc[r * n_terms + i]);
            }
        }
    }
    let acc = acc_map;
    // Rows in a stable order: by term, then authority, schools, areas, each by key.
    let mut keys: Vec<(Level, &str, Term)> = acc.keys().copied().collect();
    keys.sort_by(|a, b| (a.2, a.0, a.1).cmp(&(b.2, b.0, b.1)));
    let mut table = Table {
        terms: terms_seen.into_keys().collect(),
        ..Table::default()
    };
    // Disclosure control per term: the authority's cell is the total of its schools' and of
    // its areas'.
    let mut start = 0;
    while start < keys.len() {
        let term = keys[start].2;
        let end = keys[start..]
            .iter()
            .position(|k| k.2 != term)
            .map_or(keys.len(), |n| start + n);
        let group = &keys[start..end];
        let accs: Vec<Acc> = group.iter().map(|k| acc[k]).collect();
        let authority = group.iter().position(|k| k.0 == Level::Authority);
        let mut constraints = Vec::new();
        if let Some(total) = authority {
            for level in [Level::School, Level::Area] {
                let parts: Vec<usize> = (0..group.len()).filter(|&i| group[i].0 == level).collect();
                constraints.push(Constraint::new(total, parts));
            }
        }
        let mut shown: HashMap<Measure, Vec<bool>> = HashMap::new();
        for m in COUNTS {
            let values: Vec<u64> = accs.iter().map(|a| m.of(a)).collect();
            let status = suppress(&values, &constraints, threshold).unwrap_or_else(|e| {
                // The counts are built to add up; if they ever do not, publish nothing.
                tracing::error!(error = %e, "area report counts do not add up; all withheld");
                vec![weft_sdc::Status::Secondary; values.len()]
            });
            table.suppressed += status.iter().filter(|s| !s.published()).count();
            shown.insert(m, status.iter().map(|s| s.published()).collect());
        }
        for (i, k) in group.iter().enumerate() {
            let a = &accs[i];
            let s = |m: Measure| shown[&m][i];
            table.rows.push(Row {
                level: k.0,
                key: k.1.to_string(),
                term: k.2,
                pupils: Figure::count(a.pupils, s(Measure::Pupils)),
                attendance_rate: Figure::rate(a.attended, a.possible, s(Measure::Pupils)),
                persistent_absentees: Figure::count(a.persistent, s(Measure::PersistentAbsentees)),
                persistent_absence_rate: Figure::rate(
                    a.persistent as i64,
                    a.pupils as i64,
                    s(Measure::PersistentAbsentees) && s(Measure::Pupils),
                ),
                persistent_absentees_known_to_social_care: Figure::count(
                    a.persistent_known,
                    s(Measure::PersistentAbsenteesKnownToSocialCare),
                ),
                suspended_pupils: Figure::count(a.suspended, s(Measure::SuspendedPupils)),
                permanently_excluded_pupils: Figure::count(
                    a.excluded,
                    s(Measure::PermanentlyExcludedPupils),
                ),
                suspended_or_excluded_known_to_social_care: Figure::count(
                    a.excluded_known,
                    s(Measure::SuspendedOrExcludedKnownToSocialCare),
                ),
                sources: a.sources,
            });
        }
        start = end;
    }
    table
}

#[derive(Debug, Clone, Copy, Default)]
struct PupilTerm {
    seen: bool,
    possible: i64,
    attended: i64,
    suspended: bool,
    excluded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_read_as_mis_exports_write_them() {
        let t = |s: &str| Term::parse(s).map(|t| t.label());
        assert_eq!(t("Autumn 2024").as_deref(), Some("2024/25 autumn"));
        assert_eq!(t("Spring 2025").as_deref(), Some("2024/25 spring"));
        assert_eq!(t("2024/25 Summer").as_deref(), Some("2024/25 summer"));
        assert_eq!(t("SUM 2025").as_deref(), Some("2024/25 summer"));
        assert_eq!(t("2023-24 spring").as_deref(), Some("2023/24 spring"));
        assert_eq!(t("Week 3"), None);
        assert_eq!(t("Autumn"), None);
        assert!(Term::parse("Autumn 2024") < Term::parse("Spring 2025"));
        assert_eq!(Term::of_date("2024-10-01"), Term::parse("Autumn 2024"));
        assert_eq!(Term::of_date("2025-02-01"), Term::parse("Spring 2025"));
        assert_eq!(Term::of_date("2025-06-01"), Term::parse("Summer 2025"));
    }

    fn pupil(school: &str, area: &str, possible: i64, attended: i64, known: bool) -> Pupil {
        Pupil {
            source: 0,
            school: school.into(),
            area: area.into(),
            known_to_social_care: known,
            attendance: vec![(
                Term {
                    year: 2024,
                    term: 1,
                },
                possible,
                attended,
            )],
            exclusions: Vec::new(),
        }
    }

    #[test]
    fn counts_rates_and_small_cells_withheld_with_a_partner() {
        let mut pupils = Vec::new();
        // School A: 20 pupils, 8 persistently absent (3 known to social care).
        for i in 0..20 {
            let attended = if i < 8 { 80 } else { 100 };
            pupils.push(pupil("A", "WT1", 100, attended, i < 3));
        }
        // School B: 30 pupils, 2 persistently absent.
        for i in 0..30 {
            let attended = if i < 2 { 50 } else { 99 };
            pupils.push(pupil(
                "B",
                if i < 15 { "WT1" } else { "WT2" },
                100,
                attended,
                false,
            ));
        }
        // School C: 12 pupils, 7 persistently absent.
        for i in 0..12 {
            pupils.push(pupil("C", "WT2", 100, if i < 7 { 70 } else { 95 }, false));
        }
        let t = build(&pupils, 5);
        let row = |level, key: &str| {
            t.rows
                .iter()
                .find(|r| r.level == level && r.key == key)
                .unwrap()
        };
        let la = row(Level::Authority, "");
        assert_eq!(la.pupils.value, Some(Number::Count(62)));
        assert_eq!(la.persistent_absentees.value, Some(Number::Count(17)));
        // B's 2 is primary; the smallest other school (C, 7) goes with it; A is published.
        assert!(row(Level::School, "B").persistent_absentees.suppressed);
        assert!(row(Level::School, "B").persistent_absence_rate.suppressed);
        assert!(row(Level::School, "C").persistent_absentees.suppressed);
        assert_eq!(
            row(Level::School, "A").persistent_absentees.value,
            Some(Number::Count(8))
        );
        assert_eq!(
            row(Level::School, "A").persistent_absence_rate.value,
            Some(Number::Rate(40.0))
        );
        // The authority's 3 known to social care is small: withheld, and with it every cell
        // that would give it away.
        assert!(la.persistent_absentees_known_to_social_care.suppressed);
        for r in &t.rows {
            for f in [
                r.pupils,
                r.persistent_absentees,
                r.persistent_absentees_known_to_social_care,
                r.suspended_pupils,
            ] {
                if let Some(Number::Count(n)) = f.value {
                    assert!(n == 0 || n > 5, "{r:?}");
                }
            }
        }
        // Attendance: A = (8*80 + 12*100) / 2000.
        assert_eq!(
            row(Level::School, "A").attendance_rate.value,
            Some(Number::Rate(92.0))
        );
        assert_eq!(t.terms.len(), 1);
        assert_eq!(t.rows[0].level, Level::Authority);
    }
}
