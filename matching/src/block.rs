//! Blocking: which pairs are worth comparing at all. Each rule puts records with the same key
//! (a date of birth; a phonetic surname and birth year; a postcode and first initial) in one
//! block, and only pairs within a block are compared. Several rules are combined so that a true
//! pair missed by one (a mistyped date of birth) is caught by another; a pair two rules both
//! find is compared once, by the first rule that finds it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::compare::Comparison;
use crate::normalise::soundex;
use crate::record::{Field, Record};

/// One part of a blocking key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    Dob,
    BirthYear,
    /// Month and day of birth without the year: catches a mistyped year.
    BirthMonthDay,
    GivenName,
    GivenSoundex,
    /// The soundex codes of the whole given name and the family name, in sorted order: the
    /// same key when the two names were entered the wrong way round.
    NamesSoundex,
    GivenInitial,
    FamilyName,
    FamilySoundex,
    FamilyInitial,
    Postcode,
    PostcodeSector,
    PostcodeDistrict,
    HouseNumber,
    Street,
    Town,
    NhsNumber,
    Upn,
    OtherId,
}

const PARTS: &[(&str, KeyPart)] = &[
    ("dob", KeyPart::Dob),
    ("birth_year", KeyPart::BirthYear),
    ("birth_month_day", KeyPart::BirthMonthDay),
    ("given_name", KeyPart::GivenName),
    ("given_soundex", KeyPart::GivenSoundex),
    ("given_initial", KeyPart::GivenInitial),
    ("names_soundex", KeyPart::NamesSoundex),
    ("family_name", KeyPart::FamilyName),
    ("family_soundex", KeyPart::FamilySoundex),
    ("family_initial", KeyPart::FamilyInitial),
    ("postcode", KeyPart::Postcode),
    ("postcode_sector", KeyPart::PostcodeSector),
    ("postcode_district", KeyPart::PostcodeDistrict),
    ("house_number", KeyPart::HouseNumber),
    ("street", KeyPart::Street),
    ("town", KeyPart::Town),
    ("nhs_number", KeyPart::NhsNumber),
    ("upn", KeyPart::Upn),
    ("other_id", KeyPart::OtherId),
];

impl KeyPart {
    pub fn as_str(self) -> &'static str {
        PARTS
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }

    /// The field the part is read from: a rule is usable only when all its fields are mapped.
    pub fn field(self) -> Field {
        match self {
            KeyPart::Dob | KeyPart::BirthYear | KeyPart::BirthMonthDay => Field::BirthDate,
            KeyPart::GivenName | KeyPart::GivenSoundex | KeyPart::GivenInitial => Field::GivenName,
            // Also needs the given name: see `blocked_comparisons` and `usable`.
            KeyPart::NamesSoundex => Field::FamilyName,
            KeyPart::FamilyName | KeyPart::FamilySoundex | KeyPart::FamilyInitial => {
                Field::FamilyName
            }
            KeyPart::Postcode | KeyPart::PostcodeSector | KeyPart::PostcodeDistrict => {
                Field::Postcode
            }
            KeyPart::HouseNumber => Field::HouseNumber,
            KeyPart::Street => Field::Street,
            KeyPart::Town => Field::Town,
            KeyPart::NhsNumber => Field::NhsNumber,
            KeyPart::Upn => Field::Upn,
            KeyPart::OtherId => Field::OtherId,
        }
    }

    /// Appends the part's value to a key; `None` when the record has no value for it.
    fn write(self, r: &Record, out: &mut String) -> Option<()> {
        use std::fmt::Write;
        let _ = match self {
            KeyPart::Dob => {
                let d = r.dob?;
                write!(out, "{:04}{:02}{:02}", d.year, d.month, d.day)
            }
            KeyPart::BirthYear => write!(out, "{:04}", r.dob?.year),
            KeyPart::BirthMonthDay => write!(out, "{:02}{:02}", r.dob?.month, r.dob?.day),
            KeyPart::GivenName => write!(out, "{}", r.given.as_ref()?.first()),
            KeyPart::GivenSoundex => write!(out, "{}", soundex(r.given.as_ref()?.first())),
            KeyPart::GivenInitial => write!(out, "{}", r.given.as_ref()?.initial()?),
            KeyPart::NamesSoundex => {
                let g = soundex(&r.given.as_ref()?.joined);
                let f = soundex(&r.family.as_ref()?.joined);
                let (x, y) = if g <= f { (g, f) } else { (f, g) };
                write!(out, "{x}{y}")
            }
            KeyPart::FamilyName => write!(out, "{}", r.family.as_ref()?.joined),
            KeyPart::FamilySoundex => write!(out, "{}", soundex(&r.family.as_ref()?.joined)),
            KeyPart::FamilyInitial => write!(out, "{}", r.family.as_ref()?.initial()?),
            KeyPart::Postcode => write!(out, "{}", r.postcode.as_ref()?.compact()),
            KeyPart::PostcodeSector => write!(out, "{}", r.postcode.as_ref()?.sector()?),
            KeyPart::PostcodeDistrict => write!(out, "{}", r.postcode.as_ref()?.district()?),
            KeyPart::HouseNumber => write!(out, "{}", r.house_number.as_ref()?),
            KeyPart::Street => write!(out, "{}", r.street.as_ref()?),
            KeyPart::Town => write!(out, "{}", r.town.as_ref()?),
            KeyPart::NhsNumber => write!(out, "{}", r.nhs_number.as_ref()?.as_str()),
            KeyPart::Upn => write!(out, "{}", r.upn.as_ref()?.as_str()),
            KeyPart::OtherId => write!(out, "{}", r.other_id.as_ref()?),
        };
        Some(())
    }
}

/// A blocking rule: records agree on every part of the key. Written `family_soundex+birth_year`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rule(Vec<KeyPart>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown blocking key part `{0}`")]
pub struct UnknownPart(String);

impl FromStr for Rule {
    type Err = UnknownPart;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts = s
            .split('+')
            .map(|p| {
                let p = p.trim();
                PARTS
                    .iter()
                    .find(|(n, _)| *n == p)
                    .map(|(_, k)| *k)
                    .ok_or_else(|| UnknownPart(p.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parts.is_empty() {
            return Err(UnknownPart(s.to_string()));
        }
        Ok(Self(parts))
    }
}

impl TryFrom<String> for Rule {
    type Error = UnknownPart;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Rule> for String {
    fn from(r: Rule) -> String {
        r.to_string()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|p| p.as_str()).collect();
        f.write_str(&names.join("+"))
    }
}

impl Rule {
    /// The key of a record under this rule, as text (`dob` → `20120304`); `None` when a part
    /// is missing, so a record without a date of birth is never blocked with every other one.
    /// Stable across builds, so the master child index can keep it in its store.
    pub fn text_key(&self, r: &Record) -> Option<String> {
        let mut out = String::with_capacity(24);
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('|');
            }
            part.write(r, &mut out)?;
        }
        Some(out)
    }

    /// The key as a 64-bit hash, for blocking in memory. A collision only adds a pair to
    /// compare; it never loses one.
    pub fn key(&self, r: &Record) -> Option<u64> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.text_key(r)?.hash(&mut h);
        Some(h.finish())
    }

    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.0.iter().flat_map(|p| {
            let extra = matches!(p, KeyPart::NamesSoundex).then_some(Field::GivenName);
            std::iter::once(p.field()).chain(extra)
        })
    }

    /// Comparisons whose agreement this rule biases on its pairs; training does not learn their
    /// m probabilities from this rule's pairs. That includes partial keys: pairs blocked on the
    /// month and day of birth disagree on the year far more often by one digit than random
    /// pairs do, and EM would mistake that for a class of its own.
    pub fn blocked_comparisons(&self) -> Vec<Comparison> {
        let mut out: Vec<Comparison> = self
            .0
            .iter()
            .flat_map(|p| {
                let extra = matches!(p, KeyPart::NamesSoundex).then_some(Comparison::GivenName);
                Comparison::for_field(p.field()).into_iter().chain(extra)
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// What splits one of the rule's blocks when it is too large to compare whole (see
    /// [`MAX_BLOCK_PAIRS`]): the given name's initial, or where the rule reads the given name
    /// already, the birth year, or where it reads that too, the family name's initial.
    pub fn refinement(&self) -> KeyPart {
        let reads = |f: Field| self.fields().any(|x| x == f);
        if !reads(Field::GivenName) {
            KeyPart::GivenInitial
        } else if !reads(Field::BirthDate) {
            KeyPart::BirthYear
        } else {
            KeyPart::FamilyInitial
        }
    }

    /// Whether every field the rule reads is available.
    pub fn usable(&self, available: &[Field]) -> bool {
        self.fields().all(|f| available.contains(&f))
    }
}

/// The rules used when none are given: each catches true pairs the others miss.
pub fn default_rules() -> Vec<Rule> {
    [
        "nhs_number",
        "upn",
        "other_id",
        "dob",
        "family_soundex+birth_year",
        "names_soundex",
        "postcode+given_initial",
        "postcode+family_soundex",
        "postcode+house_number",
        "family_name+birth_month_day",
        "given_name+birth_month_day",
        "street+house_number",
        "street+town",
        "town+house_number",
        // Where a date of birth is missing and the given name is written another way (a
        // title, an initial, another of the person's names), the family name, or the given
        // name, in the same town is what is left to find the pair by.
        "family_name+town",
        "given_name+town",
    ]
    .iter()
    .filter_map(|r| r.parse().ok())
    .collect()
}

/// A block of more candidate pairs than this is split by [`Rule::refinement`]. In a file of a
/// few thousand records no block comes near it, so nothing is lost there; in a file of
/// children of 100,000 records a whole date of birth, a common family name's soundex with a
/// birth year, or a pair of common phonetic names each gather hundreds of strangers, nearly
/// every pair of whom is compared for nothing. Inside such a block, the pairs the split loses
/// are those that also disagree on the refining part from its first letter (or on the birth
/// year), which the other rules are there for.
pub const MAX_BLOCK_PAIRS: u64 = 120;

/// The keys of every record under every rule, computed once, and each key refined by the
/// rule's [`Rule::refinement`] for blocks too large to compare whole.
pub struct Keys {
    pub rules: Vec<Rule>,
    /// `keys[record * rules + rule]`: one flat table, as every pair compared reads a few
    /// records' keys for several rules.
    keys: Vec<Option<u64>>,
    /// The same layout: the key with the refinement's value, `None` when the record has none
    /// (such a record is compared with the whole block).
    refined: Vec<Option<u64>>,
}

impl Keys {
    pub fn new(rules: Vec<Rule>, records: &[Record]) -> Self {
        use rayon::prelude::*;
        let (keys, refined) = records
            .par_iter()
            .flat_map_iter(|r| {
                rules.iter().map(move |rule| {
                    let key = rule.key(r);
                    let refined = key.and_then(|k| {
                        let mut part = String::new();
                        rule.refinement().write(r, &mut part)?;
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        (k, part).hash(&mut h);
                        Some(h.finish())
                    });
                    (key, refined)
                })
            })
            .unzip();
        Self {
            rules,
            keys,
            refined,
        }
    }

    fn at(&self, record: usize, rule: usize) -> usize {
        record * self.rules.len() + rule
    }

    fn refined(&self, record: usize, rule: usize) -> Option<u64> {
        self.refined.get(self.at(record, rule)).copied().flatten()
    }

    pub fn get(&self, record: usize, rule: usize) -> Option<u64> {
        self.keys.get(self.at(record, rule)).copied().flatten()
    }

    /// Whether an earlier rule than `rule` already compared the pair: the same key, and where
    /// that rule's block was split, the same refined key too (or one of them without one).
    fn earlier(&self, a: &Self, i: usize, j: usize, rule: usize, split: &[HashSet<u64>]) -> bool {
        (0..rule).any(|q| match (self.get(i, q), a.get(j, q)) {
            (Some(x), Some(y)) if x == y => {
                !split[q].contains(&x)
                    || match (self.refined(i, q), a.refined(j, q)) {
                        (Some(x), Some(y)) => x == y,
                        _ => true,
                    }
            }
            _ => false,
        })
    }
}

/// Groups of record indices sharing a key under one rule.
fn blocks(keys: &Keys, rule: usize, n: usize) -> HashMap<u64, Vec<u32>> {
    let mut map: HashMap<u64, Vec<u32>> = HashMap::new();
    for i in 0..n {
        if let Some(k) = keys.get(i, rule) {
            map.entry(k).or_default().push(i as u32);
        }
    }
    map
}

/// Candidate pairs, rule by rule: for linking two files, `(left, right)`; for finding
/// duplicates in one, `(i, j)` with `i < j`. Each pair appears once, under the first rule that
/// finds it.
pub struct Candidates {
    /// Per rule: the blocks, as lists of record indices on each side, and whether the block
    /// pairs one list with itself (deduplication) or each of one with each of the other.
    per_rule: Vec<Vec<Block>>,
    /// Per rule: the keys whose blocks were split by the rule's refinement.
    split: Vec<HashSet<u64>>,
}

struct Block {
    left: Vec<u32>,
    right: Vec<u32>,
    within: bool,
    /// Pairs of one file given as `(i, j)` with `i < j`, as deduplication's always are.
    ordered: bool,
}

impl Block {
    fn pairs(&self) -> u64 {
        let (l, r) = (self.left.len() as u64, self.right.len() as u64);
        if self.within {
            l * l.saturating_sub(1) / 2
        } else {
            l * r
        }
    }
}

/// The blocks of one key: whole, or split by refined key when it would hold more than
/// [`MAX_BLOCK_PAIRS`] pairs. A record with no value for the refining part is compared with
/// the whole block (its own block with the others, the others' parts with it).
fn blocks_of(
    left: &Keys,
    right: Option<&Keys>,
    rule: usize,
    l: Vec<u32>,
    r: Vec<u32>,
    out: &mut Vec<Block>,
) -> bool {
    let within = right.is_none();
    let whole = Block {
        left: l,
        right: r,
        within,
        ordered: false,
    };
    if whole.pairs() <= MAX_BLOCK_PAIRS {
        if whole.pairs() > 0 {
            out.push(whole);
        }
        return false;
    }
    let right = right.unwrap_or(left);
    let parts = |keys: &Keys, v: &[u32]| {
        let mut parts: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut loose = Vec::new();
        for &i in v {
            match keys.refined(i as usize, rule) {
                Some(k) => parts.entry(k).or_default().push(i),
                None => loose.push(i),
            }
        }
        (parts, loose)
    };
    let (lp, ll) = parts(left, &whole.left);
    if within {
        let refined: Vec<u32> = lp.values().flatten().copied().collect();
        for v in lp.into_values() {
            out.push(Block {
                left: v.clone(),
                right: v,
                within: true,
                ordered: false,
            });
        }
        if !ll.is_empty() {
            out.push(Block {
                left: ll.clone(),
                right: ll.clone(),
                within: true,
                ordered: false,
            });
            out.push(Block {
                left: ll,
                right: refined,
                within: false,
                ordered: true,
            });
        }
    } else {
        let (mut rp, rl) = parts(right, &whole.right);
        let refined_left: Vec<u32> = lp.values().flatten().copied().collect();
        for (k, v) in lp {
            if let Some(w) = rp.remove(&k) {
                out.push(Block {
                    left: v,
                    right: w,
                    within: false,
                    ordered: false,
                });
            }
        }
        if !ll.is_empty() {
            out.push(Block {
                left: ll,
                right: whole.right.clone(),
                within: false,
                ordered: false,
            });
        }
        if !rl.is_empty() && !refined_left.is_empty() {
            out.push(Block {
                left: refined_left,
                right: rl,
                within: false,
                ordered: false,
            });
        }
    }
    out.retain(|b| b.pairs() > 0);
    true
}

impl Candidates {
    pub fn link(left: &Keys, right: &Keys, n_left: usize, n_right: usize) -> Self {
        let (per_rule, split) = (0..left.rules.len())
            .map(|rule| {
                let l = blocks(left, rule, n_left);
                let mut r = blocks(right, rule, n_right);
                let mut out = Vec::new();
                let mut split = HashSet::new();
                let mut keyed: Vec<(u64, Vec<u32>)> = l.into_iter().collect();
                keyed.sort_unstable_by_key(|(k, _)| *k);
                for (k, lv) in keyed {
                    if let Some(rv) = r.remove(&k) {
                        if blocks_of(left, Some(right), rule, lv, rv, &mut out) {
                            split.insert(k);
                        }
                    }
                }
                (out, split)
            })
            .unzip();
        Self { per_rule, split }
    }

    pub fn dedupe(keys: &Keys, n: usize) -> Self {
        let (per_rule, split) = (0..keys.rules.len())
            .map(|rule| {
                let mut out = Vec::new();
                let mut split = HashSet::new();
                let mut keyed: Vec<(u64, Vec<u32>)> = blocks(keys, rule, n)
                    .into_iter()
                    .filter(|(_, v)| v.len() > 1)
                    .collect();
                keyed.sort_unstable_by_key(|(k, _)| *k);
                for (k, v) in keyed {
                    if blocks_of(keys, None, rule, v.clone(), v, &mut out) {
                        split.insert(k);
                    }
                }
                (out, split)
            })
            .unzip();
        Self { per_rule, split }
    }

    pub fn rules(&self) -> usize {
        self.per_rule.len()
    }

    /// Pairs a rule's blocks hold before removing those earlier rules found: an upper bound,
    /// cheap to count, used to decide how much to sample for training.
    pub fn raw_pairs(&self, rule: usize) -> u64 {
        self.per_rule[rule].iter().map(Block::pairs).sum()
    }

    /// Calls `f(i, j)` for each pair of one block of a rule. `exclusive` skips pairs an
    /// earlier rule found; training on one rule's pairs wants them all.
    pub fn for_each_in_block(
        &self,
        left: &Keys,
        right: &Keys,
        rule: usize,
        block: usize,
        exclusive: bool,
        mut f: impl FnMut(usize, usize),
    ) {
        let b = &self.per_rule[rule][block];
        for (a, &i) in b.left.iter().enumerate() {
            let others = if b.within {
                &b.right[a + 1..]
            } else {
                &b.right[..]
            };
            for &j in others {
                let (i, j) = if b.ordered && j < i {
                    (j as usize, i as usize)
                } else {
                    (i as usize, j as usize)
                };
                if exclusive && left.earlier(right, i, j, rule, &self.split) {
                    continue;
                }
                f(i, j);
            }
        }
    }

    pub fn blocks_in(&self, rule: usize) -> usize {
        self.per_rule[rule].len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(given: &str, family: &str, dob: &str) -> Record {
        let mut r = Record::default();
        r.set(Field::GivenName, given).unwrap();
        r.set(Field::FamilyName, family).unwrap();
        r.set(Field::BirthDate, dob).unwrap();
        r
    }

    #[test]
    fn rules_parse_and_print() {
        let r: Rule = "family_soundex+birth_year".parse().unwrap();
        assert_eq!(r.to_string(), "family_soundex+birth_year");
        assert!("family_soundex+shoe_size".parse::<Rule>().is_err());
        assert_eq!(default_rules().len(), 16);
    }

    #[test]
    fn text_keys_are_readable_and_stable() {
        let a = rec("Amy", "Smith", "2012-03-04");
        let b = rec("Smyth", "Amie", "2012-03-04");
        let key = |r: &str, x: &Record| r.parse::<Rule>().unwrap().text_key(x);
        assert_eq!(key("dob", &a).as_deref(), Some("20120304"));
        assert_eq!(
            key("family_soundex+birth_year", &a).as_deref(),
            Some("S530|2012")
        );
        assert_eq!(key("names_soundex", &a), key("names_soundex", &b));
    }

    #[test]
    fn missing_parts_give_no_key() {
        let r: Rule = "dob".parse().unwrap();
        let mut a = rec("amy", "khan", "2012-01-01");
        assert!(r.key(&a).is_some());
        a.dob = None;
        assert!(r.key(&a).is_none());
    }

    /// A block too large to compare whole is split by the given name's initial: pairs across
    /// initials inside it are not compared, a record without a given name is compared with
    /// every other, a small block is compared whole, and no pair is given twice.
    #[test]
    fn large_blocks_are_split_by_the_refinement_and_small_ones_are_not() {
        let givens = ["amy", "ben", "cara", "dan"];
        let mut records: Vec<Record> = (0..40)
            .map(|i| rec(givens[i % 4], "khan", "2012-01-01"))
            .collect();
        records.push(rec("", "khan", "2012-01-01"));
        records.push(rec("zed", "xavier", "1999-09-09"));
        records.push(rec("yan", "xavier", "1999-09-09"));
        let rules: Vec<Rule> = vec!["dob".parse().unwrap()];
        assert_eq!(rules[0].refinement(), KeyPart::GivenInitial);
        let keys = Keys::new(rules, &records);
        let c = Candidates::dedupe(&keys, records.len());
        let mut pairs = Vec::new();
        for b in 0..c.blocks_in(0) {
            c.for_each_in_block(&keys, &keys, 0, b, true, |i, j| pairs.push((i, j)));
        }
        let n = pairs.len();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), n, "a pair given twice");
        assert!(pairs.iter().all(|&(i, j)| i < j));
        // Four parts of ten (45 pairs each), the nameless record with the forty, and the small
        // block of two whole.
        assert_eq!(n, 4 * 45 + 40 + 1);
        assert!(pairs.contains(&(0, 4)) && !pairs.contains(&(0, 1)));
        assert!(pairs.contains(&(1, 40)) && pairs.contains(&(41, 42)));
    }

    #[test]
    fn combined_rules_count_each_pair_once() {
        let records = vec![
            rec("amy", "smith", "2012-01-01"),
            rec("amy", "smyth", "2012-01-01"), // same dob and soundex: found by rule 0 only
            rec("amy", "smyth", "2012-01-10"), // found with 0 and with 1 by rule 1
            rec("zed", "xavier", "1999-09-09"),
        ];
        let rules: Vec<Rule> = ["dob", "family_soundex+birth_year"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let keys = Keys::new(rules, &records);
        let c = Candidates::dedupe(&keys, records.len());
        let mut pairs = Vec::new();
        for rule in 0..c.rules() {
            for b in 0..c.blocks_in(rule) {
                c.for_each_in_block(&keys, &keys, rule, b, true, |i, j| {
                    pairs.push((rule, i.min(j), i.max(j)))
                });
            }
        }
        pairs.sort();
        assert_eq!(pairs, vec![(0, 0, 1), (1, 0, 2), (1, 1, 2)]);
        assert_eq!(c.raw_pairs(1), 3);
    }
}
