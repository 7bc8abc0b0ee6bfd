//! Every file reader, fed mutated copies of real files: cut short, bits flipped, nested deep,
//! a field grown huge, a line of personal data planted, a stretch removed. Whatever the damage,
//! no reader panics; a rejection names the file and the line; and no message (error or
//! warning) quotes anything the file says: not the planted line, not the filler, not any value
//! of the original file.
//!
//! The CIN census and SSDA903 readers start from the public samples in `shared/data/samples/`;
//! no public CTF or school census export exists, so those start from `tests/data/`. A bounded
//! number of cases per reader keeps this fast enough to run on every CI run.

mod common;

use std::collections::HashSet;
use std::sync::LazyLock;

use common::sample_path;
use proptest::prelude::*;
use weft_adapters::file::{self, DroppedFile, FileFormat, ImportError, Limits};

const PLANTED: &str = "Jane Doe, 12 Secret Lane, WT9 9ZZ";
const FILLER: u8 = b'Q';

/// A position in whatever it is applied to, wrapping around.
#[derive(Debug, Clone, Copy)]
struct At(usize);

impl At {
    fn of(self, len: usize) -> usize {
        self.0 % len.max(1)
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only a prefix.
    Truncate(At),
    /// Flip single bits.
    Flip(Vec<(At, u8)>),
    /// Open this many elements where a value starts (XML), or add this many fields (CSV).
    Nest(At, usize),
    /// A value this long, where a value starts.
    Huge(At, usize),
    /// A line of personal data, where a value starts.
    Plant(At),
    /// Remove a stretch.
    Chop(At, usize),
}

fn at() -> impl Strategy<Value = At> {
    any::<usize>().prop_map(At)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        at().prop_map(Mutation::Truncate),
        prop::collection::vec((at(), 0u8..8), 1..8).prop_map(Mutation::Flip),
        (at(), 1usize..70_000).prop_map(|(i, d)| Mutation::Nest(i, d)),
        (at(), 8_000usize..300_000).prop_map(|(i, n)| Mutation::Huge(i, n)),
        at().prop_map(Mutation::Plant),
        (at(), 1usize..2_000).prop_map(|(i, n)| Mutation::Chop(i, n)),
    ]
}

/// A file to mutate, what it is, and the values it holds (text between tags, CSV fields after
/// the header), which no message may quote.
struct Seed {
    name: &'static str,
    format: FileFormat,
    bytes: Vec<u8>,
    xml: bool,
    values: Vec<String>,
}

impl Seed {
    fn new(name: &'static str, format: FileFormat, bytes: Vec<u8>) -> Seed {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let xml = text.trim_start().starts_with('<');
        let (raw, tags): (Vec<&str>, HashSet<&str>) = if xml {
            let chunks = text.split('<').filter_map(|c| c.split_once('>'));
            (
                chunks.clone().map(|(_, t)| t).collect(),
                chunks.map(|(tag, _)| tag.trim_start_matches('/')).collect(),
            )
        } else {
            let fields = text.lines().skip(1).flat_map(|l| l.split(','));
            (fields.collect(), HashSet::new())
        };
        // Short values (codes, small numbers) could coincide with a message's own words, and
        // stray text may be an element's name (`PersonBirthDate` in the 2026 CIN sample).
        let mut values: Vec<String> = raw
            .into_iter()
            .map(|v| v.trim().trim_matches('"'))
            .filter(|v| v.len() >= 6 && !tags.contains(v))
            .map(String::from)
            .collect();
        values.sort();
        values.dedup();
        Seed {
            name,
            format,
            bytes,
            xml,
            values,
        }
    }

    fn sample(name: &'static str, format: FileFormat) -> Seed {
        Seed::new(
            name,
            format,
            std::fs::read(sample_path(name)).expect("sample readable"),
        )
    }

    fn fixture(name: &'static str, format: FileFormat) -> Seed {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        Seed::new(name, format, std::fs::read(path).expect("fixture readable"))
    }

    /// Where a value starts: after a `>` in XML, after a comma or line break in CSV.
    fn value_starts(&self) -> Vec<usize> {
        let marks: &[u8] = if self.xml { b">" } else { b",\n" };
        self.bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| marks.contains(b))
            .map(|(i, _)| i + 1)
            .collect()
    }

    fn mutate(&self, m: &Mutation) -> Vec<u8> {
        let mut b = self.bytes.clone();
        let starts = self.value_starts();
        let insert = |b: &mut Vec<u8>, at: At, what: &[u8]| {
            let at = starts[at.of(starts.len())];
            b.splice(at..at, what.iter().copied());
        };
        match m {
            Mutation::Truncate(i) => b.truncate(i.of(b.len())),
            Mutation::Flip(flips) => {
                for (i, bit) in flips {
                    let at = i.of(b.len());
                    b[at] ^= 1 << bit;
                }
            }
            Mutation::Nest(i, depth) => {
                let opening = if self.xml { "<n>" } else { "," };
                insert(&mut b, *i, opening.repeat(*depth).as_bytes());
            }
            Mutation::Huge(i, n) => insert(&mut b, *i, &vec![FILLER; *n]),
            Mutation::Plant(i) => {
                let planted = if self.xml {
                    PLANTED.to_string()
                } else {
                    format!("\"{PLANTED}\"")
                };
                insert(&mut b, *i, planted.as_bytes());
            }
            Mutation::Chop(i, n) => {
                let from = i.of(b.len());
                let to = (from + n).min(b.len());
                b.drain(from..to);
            }
        }
        b
    }

    /// Parses a mutated copy and checks what any outcome must satisfy.
    fn check(&self, m: &Mutation) -> Result<(), TestCaseError> {
        let dropped = DroppedFile {
            name: self.name.into(),
            format: self.format,
            bytes: self.mutate(m),
        };
        let messages = match file::parse(&[dropped], &Limits::default()) {
            Ok(parsed) => parsed.warnings,
            Err(e) => {
                let message = e.to_string();
                match &e {
                    ImportError::Malformed { line, .. } => {
                        let located = format!("{} line {line}", self.name);
                        prop_assert!(*line >= 1, "{message}");
                        prop_assert!(message.starts_with(&located), "{message}");
                    }
                    other => prop_assert!(false, "not located in the file: {other}"),
                }
                vec![message]
            }
        };
        let filler = String::from_utf8(vec![FILLER; 6]).unwrap_or_default();
        for message in &messages {
            prop_assert!(
                message.starts_with(&format!("{} line ", self.name)),
                "{message}"
            );
            for quoted in ["Jane", "Secret", "WT9 9ZZ", filler.as_str()] {
                prop_assert!(!message.contains(quoted), "{message:?} quotes {quoted:?}");
            }
            for value in &self.values {
                prop_assert!(
                    !message.contains(value.as_str()),
                    "{message:?} quotes {value:?}"
                );
            }
        }
        Ok(())
    }
}

/// `n` cases, or `PROPTEST_CASES` for a longer run by hand.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        ..ProptestConfig::default()
    }
}

static CTF: LazyLock<Seed> = LazyLock::new(|| Seed::fixture("ctf.xml", FileFormat::CtfXml));
static CENSUS: LazyLock<Seed> =
    LazyLock::new(|| Seed::fixture("census_pupils.csv", FileFormat::CensusPupilsCsv));
static CIN_2022: LazyLock<Seed> =
    LazyLock::new(|| Seed::sample("cin_census_liia_cin-2022.xml", FileFormat::CinXml));
static CIN_2026: LazyLock<Seed> =
    LazyLock::new(|| Seed::sample("cin_census_d2i_CIN_Census_2026.xml", FileFormat::CinXml));
static CIN_FAKE: LazyLock<Seed> =
    LazyLock::new(|| Seed::sample("cin_census_d2i_fake_CIN_data.xml", FileFormat::CinXml));
static SSDA903_HEADER: LazyLock<Seed> =
    LazyLock::new(|| Seed::sample("ssda903_d2i_header.csv", FileFormat::Ssda903HeaderCsv));
static SSDA903_EPISODES: LazyLock<Seed> =
    LazyLock::new(|| Seed::sample("ssda903_d2i_episodes.csv", FileFormat::Ssda903EpisodesCsv));
static SSDA903_XML: LazyLock<Seed> =
    LazyLock::new(|| Seed::sample("ssda903_d2i_fake_903.xml", FileFormat::Ssda903Xml));

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn ctf_reader_survives_damage(m in mutation()) {
        CTF.check(&m)?;
    }

    #[test]
    fn census_reader_survives_damage(m in mutation()) {
        CENSUS.check(&m)?;
    }

    #[test]
    fn cin_reader_survives_damage_to_the_small_samples(m in mutation(), which in any::<bool>()) {
        if which { CIN_2022.check(&m)? } else { CIN_2026.check(&m)? }
    }
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn cin_reader_survives_damage_to_the_large_sample(m in mutation()) {
        CIN_FAKE.check(&m)?;
    }

    #[test]
    fn ssda903_csv_readers_survive_damage(m in mutation(), episodes in any::<bool>()) {
        if episodes { SSDA903_EPISODES.check(&m)? } else { SSDA903_HEADER.check(&m)? }
    }

    #[test]
    fn ssda903_xml_reader_survives_damage(m in mutation()) {
        SSDA903_XML.check(&m)?;
    }
}

#[test]
fn the_mutations_reach_the_limits_and_the_planted_line() {
    // The properties would hold vacuously if no mutation got past the first fault: these do.
    let seed = &*CTF;
    let messages = |m: Mutation| {
        let dropped = DroppedFile {
            name: seed.name.into(),
            format: seed.format,
            bytes: seed.mutate(&m),
        };
        match file::parse(&[dropped], &Limits::default()) {
            Ok(p) => p.warnings.join("\n"),
            Err(e) => e.to_string(),
        }
    };
    // Where the first pupil's date of birth starts.
    let dob = seed
        .value_starts()
        .iter()
        .position(|&p| seed.bytes[..p].ends_with(b"<DOB>"))
        .map(At)
        .expect("a <DOB>");
    let deep = messages(Mutation::Nest(dob, 60_000));
    assert!(deep.contains("limits.xml_depth"), "{deep}");
    let huge = messages(Mutation::Huge(dob, 200_000));
    assert!(huge.contains("limits.field_bytes"), "{huge}");
    let planted = messages(Mutation::Plant(dob));
    assert_eq!(
        planted,
        "ctf.xml line 13 <DOB>: not a date (expected YYYY-MM-DD or DD/MM/YYYY)"
    );
}
