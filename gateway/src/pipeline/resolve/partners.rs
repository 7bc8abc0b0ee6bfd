//! A pass's records that are certainly one child's with a record of another source in the same
//! pass: what a record brings with it when it joins a child.
//!
//! A pass places its records one at a time, strongest anchor first, and the rule that a second
//! record from one source joins a child only when certain ([`super::linkage::SECOND_RECORD`])
//! looks at the child as it is when the record arrives. Two boys of one name born on one day,
//! one known to health by his NHS number, the other to the school by a UPN no one else holds and
//! to health without an NHS number: the school's record is placed before the second health
//! record (a UPN is the stronger anchor), meets the first boy's health record at p 0.99, where
//! nothing says two children, and joins him; the second health record then joins its own
//! school's record, certain. The first boy's child now holds the other boy's records.
//! Read together, the school's record and its health record would bring a second health
//! record into his child, which that rule holds for a person unless certain. So a pass reads
//! every source before it places anything, and finds (once, when it places its first record)
//! which of its records are certain with a record of another source in the pass (their
//! *partners*); a record placed counts its partners' sources as its own when asking whether the
//! child already holds a record of them — partners it has already joined excepted. The same
//! partners go to both paths (one record at a time and the bulk one), so both place a pass's
//! records the same way; a record arriving alone has none.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use weft_adapters::SourceRecord;
use weft_matching::block::{Candidates, Keys};
use weft_matching::compare::Comparison;
use weft_matching::{Record, Scorer};

use super::linkage::{counted, identifiers_conflict, Matcher};
use super::{Link, Stored};
use crate::foundation::metrics::elapsed_ms;

/// Each record's partners, keyed by source and local id.
type Found = HashMap<(String, String), Vec<Link>>;

/// A pass's records: each source with its records (a source may come more than once, its
/// records in parts).
type Listed<'a> = Vec<(&'a str, &'a [SourceRecord])>;

/// The partners of a pass's records, found the first time a record placed asks for its own: a
/// pass that places nothing (a refresh over sources that have not changed) never looks.
/// [`Partners::default`] is none at all, for records that do not arrive with a pass.
#[derive(Default)]
pub(crate) struct Partners<'a> {
    pass: Option<(&'a Matcher, Listed<'a>)>,
    found: OnceLock<Found>,
}

impl<'a> Partners<'a> {
    /// The partners among `listed`, each source with its records (a source may come more than
    /// once, its records in parts).
    pub(crate) fn of_pass(
        matcher: &'a Matcher,
        listed: Vec<(&'a str, &'a [SourceRecord])>,
    ) -> Self {
        Self {
            pass: Some((matcher, listed)),
            found: OnceLock::new(),
        }
    }

    /// The records `local_id` of `source` is certain with, none when it has none.
    pub(crate) fn of(&self, source: &str, local_id: &str) -> &[Link] {
        let found = self.found.get_or_init(|| match &self.pass {
            Some((matcher, listed)) => {
                let clock = Instant::now();
                let found = find(matcher, listed);
                tracing::info!(
                    records = found.len(),
                    ms = elapsed_ms(clock),
                    "index pass: records certain with a record of another source found"
                );
                found
            }
            None => Found::new(),
        });
        found
            .get(&(source.to_string(), local_id.to_string()))
            .map_or(&[], Vec::as_slice)
    }
}

/// Finds the partners among `listed`, scoring the pairs blocking gives as the index would
/// score one against the other: the matcher's model, its rules and thresholds, the twin rule,
/// and how common each name is in the pass. A pair is partners when either record is graded
/// certain against the other and no identifier of theirs conflicts; pairs of one source are not
/// (a source's own duplicates are the rule's business already).
fn find(matcher: &Matcher, listed: &[(&str, &[SourceRecord])]) -> Found {
    // A local id listed twice is one record; its last row is what the index keeps.
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    let mut who: Vec<(&str, &str)> = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    for (source, recs) in listed {
        for rec in *recs {
            let record = Stored::matched(rec);
            match at.get(&(*source, rec.local_id.as_str())) {
                Some(&i) => records[i] = record,
                None => {
                    at.insert((source, rec.local_id.as_str()), records.len());
                    who.push((source, rec.local_id.as_str()));
                    records.push(record);
                }
            }
        }
    }
    let terms = Terms::count(matcher, records.iter());
    let forms: Vec<Record> = records
        .iter()
        .zip(&who)
        .map(|(r, (_, id))| Record::from_form(*id, &r.form()))
        .collect();
    let keys = Keys::new(matcher.rules().to_vec(), &records);
    let candidates = Candidates::dedupe(&keys, records.len());
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for rule in 0..candidates.rules() {
        for block in 0..candidates.blocks_in(rule) {
            candidates.for_each_in_block(&keys, &keys, rule, block, true, |i, j| {
                if who[i].0 != who[j].0 {
                    pairs.push((i as u32, j as u32));
                }
            });
        }
    }
    // Either way round, each record scored with its own names' counts, as it would be
    // arriving at an index holding the other.
    let mut directed: Vec<(u32, u32)> = pairs.iter().flat_map(|&(i, j)| [(i, j), (j, i)]).collect();
    drop(pairs);
    directed.sort_unstable();
    let mut certain: Vec<(u32, u32)> = Vec::new();
    for run in directed.chunk_by(|a, b| a.0 == b.0) {
        let a = &records[run[0].0 as usize];
        let (tf, population) = matcher.tf_from(a, |c, v| terms.get(c, v));
        let scorer = Scorer::new(&matcher.model, &tf, population).with_twin_rule();
        for &(i, j) in run {
            let b = &forms[j as usize];
            if identifiers_conflict(a, b) {
                continue;
            }
            let score = scorer.score_above(a, b, matcher.certain_from());
            if score.is_some_and(|s| s.guard.is_none()) {
                certain.push((i.min(j), i.max(j)));
            }
        }
    }
    certain.sort_unstable();
    certain.dedup();
    let mut out = Found::new();
    let link = |k: u32| Link {
        source: who[k as usize].0.to_string(),
        local_id: who[k as usize].1.to_string(),
    };
    for (i, j) in certain {
        for (me, other) in [(i, j), (j, i)] {
            let (source, local_id) = who[me as usize];
            out.entry((source.to_string(), local_id.to_string()))
                .or_default()
                .push(link(other));
        }
    }
    out
}

/// How often each name occurs among the pass's records, in the shape the index keeps them
/// (`match_terms`: per value its count; per comparison its total and sum of squared counts).
struct Terms(HashMap<(Comparison, String), (i64, i64)>);

impl Terms {
    fn count<'r>(matcher: &Matcher, records: impl Iterator<Item = &'r Record>) -> Terms {
        let comparisons: Vec<Comparison> = matcher.tf_comparisons().collect();
        let mut n: HashMap<(Comparison, String), i64> = HashMap::new();
        for r in records {
            for &c in &comparisons {
                if let Some(v) = counted(c, r) {
                    *n.entry((c, v.to_string())).or_default() += 1;
                }
            }
        }
        let mut out: HashMap<(Comparison, String), (i64, i64)> = HashMap::new();
        for ((c, v), k) in n {
            let total = out.entry((c, String::new())).or_default();
            total.0 += k;
            total.1 += k * k;
            out.insert((c, v), (k, 0));
        }
        Terms(out)
    }

    fn get(&self, c: Comparison, v: &str) -> (i64, i64) {
        self.0.get(&(c, v.to_string())).copied().unwrap_or((0, 0))
    }
}
