//! An in-memory index that answers "who is this?" for one record: the blocking rules find the
//! candidates, the model scores them. Records are added one at a time, so new and changed
//! records join the index without rebuilding it.

use std::collections::{HashMap, HashSet};

use crate::block::Rule;
use crate::compare::Comparison;
use crate::model::{Model, Score, Scorer, TermFrequencies};
use crate::record::Record;

/// A candidate and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Position of the record in the index, as [`SearchIndex::insert`] returned it.
    pub index: u32,
    pub score: Score,
}

pub struct SearchIndex {
    rules: Vec<Rule>,
    comparisons: Vec<Comparison>,
    records: Vec<Record>,
    /// Per rule: key → records with that key.
    blocks: Vec<HashMap<u64, Vec<u32>>>,
    tf: TermFrequencies,
}

impl SearchIndex {
    pub fn new(rules: Vec<Rule>, comparisons: Vec<Comparison>) -> Self {
        Self {
            blocks: rules.iter().map(|_| HashMap::new()).collect(),
            rules,
            comparisons,
            records: Vec::new(),
            tf: TermFrequencies::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, index: u32) -> Option<&Record> {
        self.records.get(index as usize)
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn term_frequencies(&self) -> &TermFrequencies {
        &self.tf
    }

    pub fn insert(&mut self, r: Record) -> u32 {
        let index = self.records.len() as u32;
        for (rule, blocks) in self.rules.iter().zip(&mut self.blocks) {
            if let Some(k) = rule.key(&r) {
                blocks.entry(k).or_default().push(index);
            }
        }
        self.tf.add(&self.comparisons, &r);
        self.records.push(r);
        index
    }

    /// Records sharing a blocking key with the query, each once.
    pub fn candidates(&self, q: &Record) -> Vec<u32> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (rule, blocks) in self.rules.iter().zip(&self.blocks) {
            let Some(k) = rule.key(q) else { continue };
            for &i in blocks.get(&k).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(i) {
                    out.push(i);
                }
            }
        }
        out
    }

    /// Candidates at or above `floor`, best first, at most `limit`.
    pub fn search(&self, model: &Model, q: &Record, floor: f64, limit: usize) -> Vec<Hit> {
        let scorer = Scorer::new(model, &self.tf, self.records.len() as f64);
        let mut hits: Vec<Hit> = self
            .candidates(q)
            .into_iter()
            .filter_map(|i| {
                let score = scorer.score(q, &self.records[i as usize]);
                (score.probability >= floor).then_some(Hit { index: i, score })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .weight
                .total_cmp(&a.score.weight)
                .then(a.index.cmp(&b.index))
        });
        hits.truncate(limit);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::default_rules;
    use crate::record::Field;

    fn rec(given: &str, family: &str, dob: &str) -> Record {
        let mut r = Record::default();
        r.set(Field::GivenName, given).unwrap();
        r.set(Field::FamilyName, family).unwrap();
        r.set(Field::BirthDate, dob).unwrap();
        r
    }

    #[test]
    fn finds_a_misspelt_child_and_ranks_it_first() {
        let fields = [Field::GivenName, Field::FamilyName, Field::BirthDate];
        let comparisons = crate::link::comparisons_for(&fields);
        let mut model = Model::initial(&comparisons);
        model.set_u(&[
            vec![1.0, 1.0, 2.0, 6.0, 0.1, 90.0],
            vec![1.0, 2.0, 7.0, 0.1, 90.0],
            vec![1.0, 0.1, 0.5, 8.4, 90.0],
        ]);
        model.seal();
        let mut index = SearchIndex::new(
            crate::link::usable_rules(&default_rules(), &fields),
            comparisons,
        );
        index.insert(rec("Eleanor", "Thompson", "2016-06-21"));
        index.insert(rec("Eleanor", "Baker", "2016-06-21"));
        index.insert(rec("Ruby", "Calder", "2011-05-14"));
        let hits = index.search(&model, &rec("Ellie", "Thomson", "2016-06-21"), 0.0, 10);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].index, 0);
        assert!(hits[0].score.weight > hits[1].score.weight);
        assert!(index
            .search(&model, &rec("Zed", "Xu", "1990-01-01"), 0.0, 10)
            .is_empty());
    }
}
