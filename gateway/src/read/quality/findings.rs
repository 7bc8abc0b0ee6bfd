//! What is wrong with each source's records, worked out from the master child index: the same
//! child's records in two systems that disagree on a field, identifiers that fail their check,
//! records waiting in the review queue, and records of one source that are likely the same
//! child. Read once from the store ([`load`]), then worked out in memory ([`find`]), so the
//! rules can be tested without a database.
//!
//! Values are compared as the matcher normalises them (`weft_matching::normalise`), so
//! "SMITH" and "Smith", `2014-03-02` and `02/03/2014`, `M` and `male`, `wt1 1aa` and `WT1 1AA`
//! agree: only a difference a person would have to correct at source is listed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use sqlx::Row;
use weft_adapters::Demographics;
use weft_matching::normalise::{self, Dob, Name, Postcode, Sex};
use weft_matching::{Comparison, Record, Scorer};

use crate::foundation::store::Store;
use crate::pipeline::resolve::linkage::Matcher;

/// The fields compared between two systems' records of one child, in report order.
pub const FIELDS: [&str; 7] = [
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "postcode",
    "address",
    "school",
];

/// Blocks larger than this are not paired within a source: a key that many records share (a
/// common name with no date of birth) says too little, and pairing it is quadratic.
const MAX_BLOCK: usize = 50;

/// An identifier as the index keeps it (`source_records.identifiers`).
#[derive(Debug, Clone, Deserialize)]
struct StoredIdentifier {
    kind: String,
    value: String,
}

/// One source record as the report reads it.
#[derive(Debug, Clone)]
pub struct Held {
    pub source: String,
    pub local_id: String,
    pub child: Option<String>,
    pub demographics: Demographics,
    identifiers: Vec<StoredIdentifier>,
    /// The school (URN) an imported record names, where it names one.
    pub school: Option<String>,
    /// The record as the matcher sees it (verified identifiers only).
    record: Record,
}

/// Everything the report reads from the store.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Held>,
    /// Records with a proposal in the review queue.
    pub in_review: BTreeSet<(String, String)>,
    /// `match_terms`: how many records carry each name, for the matcher's term frequencies.
    terms: HashMap<(String, String), (i64, i64)>,
}

/// A record given directly (tests): source, local id, child, demographics, identifiers as
/// (kind, value), school.
#[cfg(test)]
pub type Given<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Demographics,
    Vec<(&'a str, &'a str)>,
    Option<&'a str>,
);

impl Loaded {
    /// Records given directly (tests).
    #[cfg(test)]
    pub fn of(records: Vec<Given<'_>>, in_review: &[(&str, &str)]) -> Loaded {
        Loaded {
            records: records
                .into_iter()
                .map(|(s, l, c, d, ids, school)| {
                    let ids: Vec<StoredIdentifier> = ids
                        .into_iter()
                        .map(|(k, v)| StoredIdentifier {
                            kind: k.into(),
                            value: v.into(),
                        })
                        .collect();
                    held(s.into(), l.into(), c.map(String::from), d, ids, school)
                })
                .collect(),
            in_review: in_review
                .iter()
                .map(|(s, l)| (s.to_string(), l.to_string()))
                .collect(),
            terms: HashMap::new(),
        }
    }
}

fn held(
    source: String,
    local_id: String,
    child: Option<String>,
    demographics: Demographics,
    identifiers: Vec<StoredIdentifier>,
    school: Option<&str>,
) -> Held {
    // The matcher's record from the same text the index keeps, verified identifiers only.
    let valid: Vec<weft_adapters::Identifier> = identifiers
        .iter()
        .filter_map(|i| {
            let v = weft_ids::verify(&i.kind, &i.value).ok()?;
            Some(weft_adapters::Identifier::new(i.kind.clone(), v))
        })
        .collect();
    let record =
        crate::pipeline::resolve::linkage::record_of(local_id.clone(), &demographics, &valid);
    Held {
        source,
        local_id,
        child,
        demographics,
        identifiers,
        school: school
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        record,
    }
}

/// An imported record's items, as far as the report needs them: the school it names.
#[derive(Deserialize)]
struct Imported {
    #[serde(default)]
    items: Vec<ImportedItem>,
}

#[derive(Deserialize)]
struct ImportedItem {
    #[serde(default)]
    category: String,
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: serde_json::Value,
}

/// Reads the index, the imported records' schools, the review queue and the name counts.
pub async fn load(store: &Store) -> Result<Loaded, sqlx::Error> {
    let pool = &store.pool;
    let mut schools: HashMap<(String, String), String> = HashMap::new();
    for row in sqlx::query("SELECT source, local_id, record FROM import_records")
        .fetch_all(pool)
        .await?
    {
        let text: String = row.try_get("record")?;
        // A record that cannot be read names no school; the import that wrote it checked it.
        let Ok(imported) = serde_json::from_str::<Imported>(&text) else {
            continue;
        };
        let school = imported.items.iter().find_map(|i| {
            (i.category == "education.enrolment" && i.field == "school_urn")
                .then(|| i.value.as_str().map(String::from))
                .flatten()
        });
        if let Some(urn) = school {
            schools.insert((row.try_get("source")?, row.try_get("local_id")?), urn);
        }
    }
    let mut records = Vec::new();
    for row in sqlx::query(
        "SELECT source, local_id, child_id, identifiers, demographics FROM source_records \
         ORDER BY source, local_id",
    )
    .fetch_all(pool)
    .await?
    {
        let source: String = row.try_get("source")?;
        let local_id: String = row.try_get("local_id")?;
        let demographics: Demographics =
            serde_json::from_str(&row.try_get::<String, _>("demographics")?).unwrap_or_default();
        let identifiers: Vec<StoredIdentifier> =
            serde_json::from_str(&row.try_get::<String, _>("identifiers")?).unwrap_or_default();
        let school = schools
            .get(&(source.clone(), local_id.clone()))
            .map(String::as_str);
        records.push(held(
            source.clone(),
            local_id.clone(),
            row.try_get("child_id")?,
            demographics,
            identifiers,
            school,
        ));
    }
    let mut in_review = BTreeSet::new();
    for row in sqlx::query("SELECT source, local_id FROM match_links WHERE status = 'review'")
        .fetch_all(pool)
        .await?
    {
        in_review.insert((row.try_get("source")?, row.try_get("local_id")?));
    }
    let mut terms = HashMap::new();
    for row in sqlx::query("SELECT comparison, value, n, sq FROM match_terms")
        .fetch_all(pool)
        .await?
    {
        terms.insert(
            (row.try_get("comparison")?, row.try_get("value")?),
            (row.try_get("n")?, row.try_get("sq")?),
        );
    }
    Ok(Loaded {
        records,
        in_review,
        terms,
    })
}

/// A field on which a record disagrees with another system's record of the same child.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub field: &'static str,
    pub other_source: String,
    pub other_local_id: String,
    /// This record's value and the other's, as the sources wrote them.
    pub value: String,
    pub other_value: String,
}

/// An identifier that fails its check.
#[derive(Debug, Clone, PartialEq)]
pub struct BadIdentifier {
    pub kind: String,
    pub value: String,
    /// Why, never echoing the value (`weft_ids::IdentifierError`).
    pub problem: String,
}

/// Another record of the same source that is likely the same child.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub local_id: String,
    /// Both records are linked to one child already.
    pub same_child: bool,
    /// The matcher's probability that they are one child (1 for a shared verified identifier).
    pub probability: f64,
}

/// What is wrong with one record; a record with nothing wrong is not listed.
#[derive(Debug, Clone, Default)]
pub struct Finding {
    pub source: String,
    pub local_id: String,
    pub child: Option<String>,
    pub disagreements: Vec<Disagreement>,
    pub invalid_identifiers: Vec<BadIdentifier>,
    pub in_review: bool,
    pub duplicates: Vec<Duplicate>,
}

impl Finding {
    fn is_empty(&self) -> bool {
        self.disagreements.is_empty()
            && self.invalid_identifiers.is_empty()
            && !self.in_review
            && self.duplicates.is_empty()
    }
}

/// One source's counts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub records: u64,
    /// Records with at least one field disagreeing with another system.
    pub disagreeing_records: u64,
    /// Disagreements by field, each record and field counted once.
    pub disagreements: BTreeMap<&'static str, u64>,
    pub invalid_identifiers: u64,
    pub in_review: u64,
    /// Pairs of the source's records likely to be one child.
    pub duplicate_pairs: u64,
}

impl Counts {
    pub fn disagreements_total(&self) -> u64 {
        self.disagreements.values().sum()
    }
}

/// Every source's findings and counts.
#[derive(Debug, Default)]
pub struct Findings {
    /// By source, then local id.
    pub records: Vec<Finding>,
    pub counts: BTreeMap<String, Counts>,
}

/// The finding of `h`, made on first use.
fn finding<'a>(by: &'a mut BTreeMap<(String, String), Finding>, h: &Held) -> &'a mut Finding {
    by.entry((h.source.clone(), h.local_id.clone()))
        .or_insert_with(|| Finding {
            source: h.source.clone(),
            local_id: h.local_id.clone(),
            child: h.child.clone(),
            ..Finding::default()
        })
}

/// A field's value as written and as compared; `None` when the record has none.
fn field(h: &Held, name: &str) -> Option<(String, String)> {
    let d = &h.demographics;
    fn raw(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    match name {
        "given_name" => {
            let v = raw(&d.given_name)?;
            Some((v.into(), Name::parse(v)?.joined))
        }
        "family_name" => {
            let v = raw(&d.family_name)?;
            Some((v.into(), Name::parse(v)?.joined))
        }
        "birth_date" => {
            let v = raw(&d.birth_date)?;
            let key = match Dob::parse(v) {
                Ok(Some(dob)) => dob.digits().iter().map(|d| char::from(b'0' + d)).collect(),
                Ok(None) => return None,
                Err(_) => normalise::fold(v),
            };
            Some((v.into(), key))
        }
        "sex" => {
            let v = raw(&d.sex)?;
            Some((v.into(), format!("{:?}", Sex::parse(v)?)))
        }
        "postcode" => {
            let v = raw(&d.postcode)?;
            Some((v.into(), Postcode::parse(v)?.compact().to_string()))
        }
        // Every line, folded and written out, as one run of words (sources split the house,
        // street and town into lines differently); see `differs` for the town left off.
        "address" => {
            let lines: Vec<&str> = d
                .address_lines
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect();
            let words: Vec<String> = lines.iter().filter_map(|l| normalise::address(l)).collect();
            (!words.is_empty()).then(|| (lines.join(", "), words.join(" ")))
        }
        "school" => {
            let v = h.school.as_deref()?;
            Some((v.into(), v.to_ascii_uppercase()))
        }
        _ => None,
    }
}

/// Works out every finding and every source's counts. `sources` are the configured sources,
/// counted even when they hold nothing.
pub fn find(loaded: &Loaded, matcher: &Matcher, sources: &[String]) -> Findings {
    let mut by_record: BTreeMap<(String, String), Finding> = BTreeMap::new();
    let mut counts: BTreeMap<String, Counts> = sources
        .iter()
        .map(|s| (s.clone(), Counts::default()))
        .collect();
    let mut children: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, h) in loaded.records.iter().enumerate() {
        counts.entry(h.source.clone()).or_default().records += 1;
        if let Some(c) = &h.child {
            children.entry(c.as_str()).or_default().push(i);
        }
    }

    // Disagreements between systems' records of one child.
    for members in children.values() {
        for &i in members {
            let a = &loaded.records[i];
            for &j in members {
                let b = &loaded.records[j];
                if b.source == a.source {
                    continue;
                }
                for name in FIELDS {
                    let (Some((va, ka)), Some((vb, kb))) = (field(a, name), field(b, name)) else {
                        continue;
                    };
                    if differs(name, &ka, &kb) {
                        finding(&mut by_record, a).disagreements.push(Disagreement {
                            field: name,
                            other_source: b.source.clone(),
                            other_local_id: b.local_id.clone(),
                            value: va,
                            other_value: vb,
                        });
                    }
                }
            }
        }
    }

    for h in &loaded.records {
        // Identifiers failing their check.
        for i in &h.identifiers {
            if let Err(e) = weft_ids::verify(&i.kind, &i.value) {
                finding(&mut by_record, h)
                    .invalid_identifiers
                    .push(BadIdentifier {
                        kind: i.kind.clone(),
                        value: i.value.clone(),
                        problem: e.to_string(),
                    });
            }
        }
        if loaded
            .in_review
            .contains(&(h.source.clone(), h.local_id.clone()))
        {
            finding(&mut by_record, h).in_review = true;
        }
    }

    // Likely duplicates inside one source: records linked to the same child, and records the
    // model scores as likely one child (a shared verified identifier, or a probability at or
    // above the lower threshold with no rule holding them apart: twins stay apart).
    let mut pairs: BTreeMap<(usize, usize), Duplicate> = BTreeMap::new();
    for members in children.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                if loaded.records[i].source == loaded.records[j].source {
                    pairs.insert(
                        (i.min(j), i.max(j)),
                        Duplicate {
                            local_id: String::new(),
                            same_child: true,
                            probability: 1.0,
                        },
                    );
                }
            }
        }
    }
    let mut blocks: HashMap<(&str, String, String), Vec<usize>> = HashMap::new();
    for (i, h) in loaded.records.iter().enumerate() {
        for (rule, key) in matcher.keys(&h.record) {
            blocks
                .entry((h.source.as_str(), rule, key))
                .or_default()
                .push(i);
        }
    }
    let count = |c: Comparison, v: &str| {
        loaded
            .terms
            .get(&(c.as_str().to_string(), v.to_string()))
            .copied()
            .unwrap_or((0, 0))
    };
    let mut blocked: BTreeSet<(usize, usize)> = BTreeSet::new();
    for members in blocks
        .values()
        .filter(|m| (2..=MAX_BLOCK).contains(&m.len()))
    {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                blocked.insert((i.min(j), i.max(j)));
            }
        }
    }
    for (i, j) in blocked {
        if pairs.contains_key(&(i, j)) {
            continue;
        }
        let (a, b) = (&loaded.records[i], &loaded.records[j]);
        let (tf, population) = matcher.tf_from(&a.record, count);
        let scorer = Scorer::new(&matcher.model, &tf, population).with_twin_rule();
        let s = scorer.score(&a.record, &b.record);
        let likely = s.guard.is_none_or(|g| !g.is_apart())
            && (s.deterministic || s.probability >= matcher.lower);
        if likely {
            pairs.insert(
                (i, j),
                Duplicate {
                    local_id: String::new(),
                    same_child: false,
                    probability: if s.deterministic { 1.0 } else { s.probability },
                },
            );
        }
    }
    for ((i, j), d) in pairs {
        let (a, b) = (&loaded.records[i], &loaded.records[j]);
        counts.entry(a.source.clone()).or_default().duplicate_pairs += 1;
        finding(&mut by_record, a).duplicates.push(Duplicate {
            local_id: b.local_id.clone(),
            ..d.clone()
        });
        finding(&mut by_record, b).duplicates.push(Duplicate {
            local_id: a.local_id.clone(),
            ..d
        });
    }

    let records: Vec<Finding> = by_record
        .into_values()
        .filter(|f| !f.is_empty())
        .map(|mut f| {
            f.disagreements.sort_by(|a, b| {
                (field_order(a.field), &a.other_source, &a.other_local_id).cmp(&(
                    field_order(b.field),
                    &b.other_source,
                    &b.other_local_id,
                ))
            });
            f.duplicates.sort_by(|a, b| a.local_id.cmp(&b.local_id));
            f
        })
        .collect();
    for f in &records {
        let c = counts.entry(f.source.clone()).or_default();
        let fields: BTreeSet<&'static str> = f.disagreements.iter().map(|d| d.field).collect();
        if !fields.is_empty() {
            c.disagreeing_records += 1;
        }
        for name in fields {
            *c.disagreements.entry(name).or_default() += 1;
        }
        c.invalid_identifiers += f.invalid_identifiers.len() as u64;
        c.in_review += u64::from(f.in_review);
    }
    Findings { records, counts }
}

/// Whether two compared values disagree. An address agrees with one that only adds lines at
/// its end: sources differ in how much of the town and county they keep, which is not an error
/// to correct.
fn differs(name: &str, a: &str, b: &str) -> bool {
    if name != "address" {
        return a != b;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
    let n = a.len().min(b.len());
    a[..n] != b[..n]
}

fn field_order(name: &str) -> usize {
    FIELDS
        .iter()
        .position(|f| *f == name)
        .unwrap_or(FIELDS.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid permanent UPN (DESIGN.md's check letter), and the same with the letter wrong.
    pub(crate) fn upn(serial: u32) -> (String, String) {
        const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRTUVWXYZ";
        let digits = format!("80120{serial:07}");
        let sum: u32 = digits
            .chars()
            .enumerate()
            .map(|(i, c)| c.to_digit(10).unwrap_or(0) * (i as u32 + 2))
            .sum();
        let good = LETTERS[(sum % 23) as usize] as char;
        let bad = LETTERS[((sum + 1) % 23) as usize] as char;
        (format!("{good}{digits}"), format!("{bad}{digits}"))
    }

    pub(crate) fn person(
        given: &str,
        family: &str,
        dob: &str,
        sex: &str,
        postcode: &str,
        line: &str,
    ) -> Demographics {
        Demographics {
            given_name: Some(given.into()),
            family_name: Some(family.into()),
            birth_date: Some(dob.into()),
            sex: Some(sex.into()),
            postcode: Some(postcode.into()),
            address_lines: vec![line.into(), "Weftham".into()],
            ..Demographics::default()
        }
    }

    /// Every planted inconsistency, and look-alikes that are not ones: the same values written
    /// differently, twins in one school, a child's records that agree.
    pub(crate) fn planted() -> Loaded {
        let (good_upn, bad_upn) = upn(17);
        let ava = || person("Ava", "Khan", "2014-03-02", "F", "WT1 1AA", "1 High Street");
        Loaded::of(
            vec![
                // One child in three systems. The school and health agree, written differently;
                // health's given name differs; social care has a date of birth one slip apart,
                // another sex, postcode, house and school.
                (
                    "census",
                    "s1",
                    Some("c1"),
                    ava(),
                    vec![("upn", good_upn.as_str())],
                    Some("100001"),
                ),
                (
                    "health",
                    "h1",
                    Some("c1"),
                    person("Eva", "KHAN", "02/03/2014", "female", "wt11aa", "1 High St"),
                    vec![("nhs_number", "9434765919")],
                    None,
                ),
                (
                    "social-care",
                    "sc1",
                    Some("c1"),
                    person("Ava", "Khan", "2014-02-03", "M", "WT1 1AB", "3 High Street"),
                    vec![],
                    Some("100002"),
                ),
                // Identifiers that fail their check: a UPN's check letter, an NHS number's
                // check digit.
                (
                    "census",
                    "s2",
                    Some("c2"),
                    person("Noah", "Smith", "2013-05-06", "M", "WT2 3BB", "5 Mill Lane"),
                    vec![("upn", bad_upn.as_str())],
                    Some("100001"),
                ),
                (
                    "health",
                    "h2",
                    Some("c2"),
                    person("Noah", "Smith", "2013-05-06", "M", "WT2 3BB", "5 Mill Lane"),
                    vec![("nhs_number", "9434765910")],
                    None,
                ),
                // One pupil entered twice in the school's MIS, as two children.
                (
                    "census",
                    "s3",
                    Some("c3"),
                    person(
                        "Isla",
                        "Okafor",
                        "2015-07-08",
                        "F",
                        "WT3 4CC",
                        "9 Rope Walk",
                    ),
                    vec![],
                    Some("100001"),
                ),
                (
                    "census",
                    "s4",
                    Some("c4"),
                    person(
                        "Isla",
                        "Okafor",
                        "2015-07-08",
                        "F",
                        "WT3 4CC",
                        "9 Rope Walk",
                    ),
                    vec![],
                    Some("100001"),
                ),
                // Twins at one school: never a duplicate.
                (
                    "census",
                    "s5",
                    Some("c5"),
                    person(
                        "Oscar",
                        "Lindqvist",
                        "2016-01-09",
                        "M",
                        "WT4 5DD",
                        "2 Dock Road",
                    ),
                    vec![],
                    Some("100001"),
                ),
                (
                    "census",
                    "s6",
                    Some("c6"),
                    person(
                        "Freya",
                        "Lindqvist",
                        "2016-01-09",
                        "F",
                        "WT4 5DD",
                        "2 Dock Road",
                    ),
                    vec![],
                    Some("100001"),
                ),
                // A record the matcher asked a person about.
                (
                    "social-care",
                    "sc7",
                    Some("c7"),
                    person(
                        "Leo",
                        "Patel",
                        "2012-11-12",
                        "M",
                        "WT5 6EE",
                        "4 Wharf Street",
                    ),
                    vec![],
                    None,
                ),
                // Two records of one source linked to the same child.
                (
                    "health",
                    "h8",
                    Some("c8"),
                    person(
                        "Ruby",
                        "Brown",
                        "2011-04-05",
                        "F",
                        "WT6 7FF",
                        "8 Kiln Close",
                    ),
                    vec![],
                    None,
                ),
                (
                    "health",
                    "h9",
                    Some("c8"),
                    person(
                        "Ruby",
                        "Brown",
                        "2011-04-05",
                        "F",
                        "WT6 7FF",
                        "8 Kiln Close",
                    ),
                    vec![],
                    None,
                ),
            ],
            &[("social-care", "sc7")],
        )
    }

    fn sources() -> Vec<String> {
        ["census", "health", "social-care", "police"]
            .map(String::from)
            .to_vec()
    }

    fn of<'a>(f: &'a Findings, source: &str, local_id: &str) -> &'a Finding {
        f.records
            .iter()
            .find(|r| r.source == source && r.local_id == local_id)
            .unwrap_or_else(|| panic!("{source}/{local_id} not listed"))
    }

    fn fields_against(f: &Finding, other: &str) -> Vec<&'static str> {
        f.disagreements
            .iter()
            .filter(|d| d.other_source == other)
            .map(|d| d.field)
            .collect()
    }

    #[test]
    fn lists_each_planted_inconsistency() {
        let f = find(&planted(), &Matcher::builtin(), &sources());

        // The given name, and only it, between the school and health: the same values
        // written differently are not disagreements.
        let s1 = of(&f, "census", "s1");
        assert_eq!(fields_against(s1, "health"), ["given_name"]);
        let d = &s1.disagreements[0];
        assert_eq!((d.value.as_str(), d.other_value.as_str()), ("Ava", "Eva"));
        assert_eq!(d.other_local_id, "h1");
        // Date of birth slip, sex, postcode, house and school against social care.
        assert_eq!(
            fields_against(s1, "social-care"),
            ["birth_date", "sex", "postcode", "address", "school"]
        );
        // Each side lists its own.
        let sc1 = of(&f, "social-care", "sc1");
        assert_eq!(
            fields_against(sc1, "census"),
            ["birth_date", "sex", "postcode", "address", "school"]
        );
        assert_eq!(
            fields_against(sc1, "health"),
            ["given_name", "birth_date", "sex", "postcode", "address"]
        );
        assert_eq!(
            fields_against(of(&f, "health", "h1"), "census"),
            ["given_name"]
        );

        // Identifiers failing their check, with why, on the records that hold them.
        let s2 = of(&f, "census", "s2");
        assert_eq!(s2.invalid_identifiers.len(), 1);
        assert_eq!(s2.invalid_identifiers[0].kind, "upn");
        assert_eq!(
            s2.invalid_identifiers[0].problem,
            "check character does not match"
        );
        assert!(s2.disagreements.is_empty());
        let h2 = of(&f, "health", "h2");
        assert_eq!(h2.invalid_identifiers[0].kind, "nhs_number");
        assert!(of(&f, "census", "s1").invalid_identifiers.is_empty());

        // The duplicate pupil, both ways; the twins are not listed at all.
        let s3 = of(&f, "census", "s3");
        assert_eq!(s3.duplicates.len(), 1);
        assert_eq!(s3.duplicates[0].local_id, "s4");
        assert!(!s3.duplicates[0].same_child);
        assert!(s3.duplicates[0].probability >= Matcher::builtin().lower);
        assert_eq!(of(&f, "census", "s4").duplicates[0].local_id, "s3");
        assert!(!f
            .records
            .iter()
            .any(|r| r.local_id == "s5" || r.local_id == "s6"));
        // Two records of one source on one child.
        let h8 = of(&f, "health", "h8");
        assert_eq!(h8.duplicates[0].local_id, "h9");
        assert!(h8.duplicates[0].same_child);

        // The review queue.
        assert!(of(&f, "social-care", "sc7").in_review);
        assert!(!s1.in_review);

        // Counts per source; a configured source holding nothing is counted too.
        let census = &f.counts["census"];
        assert_eq!(census.records, 6);
        assert_eq!(census.disagreeing_records, 1);
        assert_eq!(census.disagreements.get("given_name"), Some(&1));
        assert_eq!(census.disagreements.get("school"), Some(&1));
        assert_eq!(census.disagreements_total(), 6);
        assert_eq!(census.invalid_identifiers, 1);
        assert_eq!(census.duplicate_pairs, 1);
        assert_eq!(census.in_review, 0);
        assert_eq!(f.counts["health"].duplicate_pairs, 1);
        assert_eq!(f.counts["health"].invalid_identifiers, 1);
        assert_eq!(f.counts["social-care"].in_review, 1);
        assert_eq!(f.counts["police"], Counts::default());
    }

    #[test]
    fn a_child_whose_records_agree_is_not_listed() {
        let same = || person("Mia", "Jones", "2014-09-10", "F", "WT7 8GG", "6 Quay Lane");
        let loaded = Loaded::of(
            vec![
                ("census", "a", Some("c"), same(), vec![], Some("100001")),
                ("health", "b", Some("c"), same(), vec![], None),
                // Missing values are not disagreements.
                (
                    "police",
                    "p",
                    Some("c"),
                    Demographics {
                        family_name: Some("Jones".into()),
                        ..Demographics::default()
                    },
                    vec![],
                    None,
                ),
            ],
            &[],
        );
        let f = find(&loaded, &Matcher::builtin(), &sources());
        assert!(f.records.is_empty(), "{:?}", f.records);
        assert_eq!(f.counts["census"].records, 1);
    }
}
