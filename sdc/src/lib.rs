//! Statistical disclosure control for tables of counts of children, as official statistics do
//! it (cell suppression):
//!
//! - **Primary suppression**: a count from 1 to the threshold (5) is not published.
//! - **Secondary suppression**: more cells are withheld until no suppressed cell can be worked
//!   out from the cells and totals that are published — within one table, and across tables
//!   that share totals (a term's total is the sum of its schools' counts and of its areas'
//!   counts alike; a district's the sum of its wards').
//!
//! Tables are given as cells and additive constraints: each [`Constraint`] says that one cell
//! (the total) is the sum of others (its parts). A cell may be a part in one constraint and the
//! total of another (a hierarchy), or the total of several (two ways of splitting one total).
//!
//! The rule enforced, for every constraint that has a suppressed cell:
//!
//! 1. at least two of its cells are suppressed — one alone would be its total minus the
//!    published parts (or the parts' sum);
//! 2. the suppressed parts add up to more than the threshold, unless every non-zero part is
//!    suppressed — otherwise their sum, which the published cells give away, would itself be a
//!    small number, and with it each of them would be known to be small.
//!
//! Secondary cells are chosen to lose as little as possible: the smallest non-zero published
//! part of the constraint that needs one, then its total. Zeros are published (a zero is no
//! child), and never chosen: withholding one hides nothing that the sum does not already say.
//! The property tests check the outcome the hard way, by linear programming over random
//! hierarchies: every suppressed cell's feasible range, given all that is published, is wider
//! than the threshold.

use serde::Serialize;

/// The default threshold: counts from 1 to 5 are not published.
pub const THRESHOLD: u64 = 5;

/// `cells[total] == sum of cells[parts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub total: usize,
    pub parts: Vec<usize>,
}

impl Constraint {
    pub fn new(total: usize, parts: Vec<usize>) -> Self {
        Self { total, parts }
    }
}

/// What happens to one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Published,
    /// A count from 1 to the threshold.
    Primary,
    /// Withheld so that a primary cell cannot be worked out.
    Secondary,
}

impl Status {
    pub fn published(self) -> bool {
        self == Status::Published
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdcError {
    #[error("constraint {constraint} names cell {cell}, but there are {cells} cells")]
    NoSuchCell {
        constraint: usize,
        cell: usize,
        cells: usize,
    },
    #[error(
        "constraint {constraint} does not add up: its parts sum to {parts}, its total is {total}"
    )]
    Inconsistent {
        constraint: usize,
        parts: u64,
        total: u64,
    },
}

/// Decides which cells of `values` may be published, given the additive `constraints` between
/// them. Counts from 1 to `threshold` are withheld, then as many more as the rule above needs.
pub fn suppress(
    values: &[u64],
    constraints: &[Constraint],
    threshold: u64,
) -> Result<Vec<Status>, SdcError> {
    for (i, c) in constraints.iter().enumerate() {
        let mut sum = 0u64;
        for &cell in std::iter::once(&c.total).chain(&c.parts) {
            let Some(v) = values.get(cell) else {
                return Err(SdcError::NoSuchCell {
                    constraint: i,
                    cell,
                    cells: values.len(),
                });
            };
            if cell != c.total {
                sum = sum.saturating_add(*v);
            }
        }
        if sum != values[c.total] {
            return Err(SdcError::Inconsistent {
                constraint: i,
                parts: sum,
                total: values[c.total],
            });
        }
    }
    let mut status: Vec<Status> = values
        .iter()
        .map(|&v| {
            if (1..=threshold).contains(&v) {
                Status::Primary
            } else {
                Status::Published
            }
        })
        .collect();
    // Each pass withholds at least one more cell, or ends: at most one pass per cell.
    loop {
        let mut changed = false;
        for c in constraints {
            if let Some(cell) = needs(values, &status, c, threshold) {
                status[cell] = Status::Secondary;
                changed = true;
            }
        }
        if !changed {
            return Ok(status);
        }
    }
}

/// The cell to withhold next for constraint `c`, if it does not yet meet the rule.
fn needs(values: &[u64], status: &[Status], c: &Constraint, threshold: u64) -> Option<usize> {
    let hidden = |i: usize| !status[i].published();
    let total_hidden = hidden(c.total);
    let hidden_parts: Vec<usize> = c.parts.iter().copied().filter(|&i| hidden(i)).collect();
    let count = hidden_parts.len() + usize::from(total_hidden);
    if count == 0 {
        return None;
    }
    let sum: u64 = hidden_parts.iter().map(|&i| values[i]).sum();
    // The smallest published non-zero part: the cheapest cell that adds protection.
    let candidate = c
        .parts
        .iter()
        .copied()
        .filter(|&i| !hidden(i) && values[i] > 0)
        .min_by_key(|&i| (values[i], i));
    let all_nonzero_hidden = candidate.is_none();
    let ok = count >= 2 && (sum > threshold || (all_nonzero_hidden && !hidden_parts.is_empty()));
    if ok {
        return None;
    }
    match candidate {
        Some(i) => Some(i),
        // Nothing left among the parts: withhold the total (protected in turn by the
        // constraints it is a part or a total of).
        None if !total_hidden => Some(c.total),
        // Total and every non-zero part withheld, and still only one cell: the one is a
        // withheld total whose parts are all zero, so it is zero — nothing to protect.
        None => None,
    }
}

#[cfg(test)]
mod lp;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_lone_small_count_takes_its_smallest_neighbour_with_it() {
        // total, then three parts.
        let values = [30, 3, 12, 15];
        let s = suppress(&values, &[Constraint::new(0, vec![1, 2, 3])], 5).unwrap();
        assert_eq!(
            s,
            [
                Status::Published,
                Status::Primary,
                Status::Secondary,
                Status::Published
            ]
        );
    }

    #[test]
    fn two_small_counts_whose_sum_is_small_need_a_third() {
        let values = [40, 2, 3, 15, 20];
        let s = suppress(&values, &[Constraint::new(0, vec![1, 2, 3, 4])], 5).unwrap();
        assert_eq!(s[3], Status::Secondary, "{s:?}");
        assert_eq!(s[4], Status::Published);
    }

    #[test]
    fn a_small_total_hides_every_non_zero_part_and_zeros_stay() {
        let values = [4, 0, 4, 0];
        let s = suppress(&values, &[Constraint::new(0, vec![1, 2, 3])], 5).unwrap();
        assert_eq!(
            s,
            [
                Status::Primary,
                Status::Published,
                Status::Primary,
                Status::Published
            ]
        );
    }

    #[test]
    fn a_total_split_two_ways_is_protected_in_both() {
        // Cell 0 is the total; 1–3 by school, 4–5 by area. One school has 2.
        let values = [50, 2, 20, 28, 25, 25];
        let cs = [
            Constraint::new(0, vec![1, 2, 3]),
            Constraint::new(0, vec![4, 5]),
        ];
        let s = suppress(&values, &cs, 5).unwrap();
        assert!(!s[1].published() && !s[2].published(), "{s:?}");
        assert!(s[0].published() && s[4].published() && s[5].published());
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        assert!(matches!(
            suppress(&[10, 3, 4], &[Constraint::new(0, vec![1, 2])], 5),
            Err(SdcError::Inconsistent { .. })
        ));
        assert!(matches!(
            suppress(&[10], &[Constraint::new(0, vec![1])], 5),
            Err(SdcError::NoSuchCell { .. })
        ));
    }

    /// A random hierarchy: a root total split one to three ways; each part split again, at
    /// random, down to three levels. Small counts are common, as in real tables of children.
    fn hierarchy() -> impl Strategy<Value = (Vec<u64>, Vec<Constraint>)> {
        let leaf = prop_oneof![3 => 0u64..=6, 2 => 0u64..=40, 1 => 0u64..=400];
        // Each split: a list of leaves; a nested split: leaves, one of which is split again.
        (
            1usize..=3,
            proptest::collection::vec(proptest::collection::vec(leaf.clone(), 1..6), 1..4),
            proptest::collection::vec((0usize..6, proptest::collection::vec(leaf, 1..5)), 0..4),
        )
            .prop_map(|(ways, first, nested)| build(ways, first, nested))
    }

    /// Builds cells and constraints: `first[0]` splits the root, further splits of the root
    /// (`ways` in all) shuffle the same total into other groupings; `nested` splits a part of
    /// the first split into sub-parts.
    fn build(
        ways: usize,
        first: Vec<Vec<u64>>,
        nested: Vec<(usize, Vec<u64>)>,
    ) -> (Vec<u64>, Vec<Constraint>) {
        let mut values = vec![0u64];
        let mut constraints = Vec::new();
        // Leaves of the finest level; parts of the first split are groups of them.
        let mut parts = Vec::new();
        let mut leaves: Vec<u64> = Vec::new();
        for group in &first {
            let v: u64 = group.iter().sum();
            values.push(v);
            parts.push(values.len() - 1);
            leaves.extend(group);
        }
        let total: u64 = leaves.iter().sum();
        values[0] = total;
        constraints.push(Constraint::new(0, parts.clone()));
        // The same leaves grouped otherwise: another split of the same total.
        for w in 1..ways {
            let mut groups: Vec<u64> = Vec::new();
            for (i, v) in leaves.iter().enumerate() {
                let g = (i * (w + 1)) % (w + 2);
                if groups.len() <= g {
                    groups.resize(g + 1, 0);
                }
                groups[g] += v;
            }
            let mut idx = Vec::new();
            for g in groups {
                values.push(g);
                idx.push(values.len() - 1);
            }
            constraints.push(Constraint::new(0, idx));
        }
        // Each first-level part is split into its leaves.
        for (group, &part) in first.iter().zip(&parts) {
            if group.len() > 1 {
                let mut idx = Vec::new();
                for &v in group {
                    values.push(v);
                    idx.push(values.len() - 1);
                }
                constraints.push(Constraint::new(part, idx));
            }
        }
        // Some leaves split further: a third level.
        let leaf_cells: Vec<usize> = constraints
            .iter()
            .skip(ways)
            .flat_map(|c| c.parts.clone())
            .collect();
        for (pick, split) in nested {
            if leaf_cells.is_empty() {
                break;
            }
            let cell = leaf_cells[pick % leaf_cells.len()];
            if constraints.iter().any(|c| c.total == cell) {
                continue;
            }
            // Rescale the split to add up to the cell's value.
            let target = values[cell];
            let mut sub: Vec<u64> = split.clone();
            let s: u64 = sub.iter().sum();
            match s {
                0 => sub[0] = target,
                s => {
                    let mut acc = 0;
                    let n = sub.len();
                    for (i, v) in sub.iter_mut().enumerate() {
                        if i + 1 == n {
                            *v = target - acc;
                        } else {
                            *v = (*v * target) / s;
                            acc += *v;
                        }
                    }
                }
            }
            let mut idx = Vec::new();
            for v in sub {
                values.push(v);
                idx.push(values.len() - 1);
            }
            constraints.push(Constraint::new(cell, idx));
        }
        (values, constraints)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn nothing_small_is_published_and_nothing_withheld_can_be_worked_out(
            (values, constraints) in hierarchy()
        ) {
            let status = suppress(&values, &constraints, THRESHOLD).unwrap();
            for (v, s) in values.iter().zip(&status) {
                prop_assert!(!(s.published() && (1..=THRESHOLD).contains(v)),
                    "published a small count: {values:?} {status:?}");
            }
            // What someone holding every published cell can say of each withheld one.
            let bounds = lp::bounds(&values, &constraints, &status);
            for (cell, (lo, hi)) in bounds {
                prop_assert!(lo <= values[cell] as f64 + 1e-6 && hi >= values[cell] as f64 - 1e-6,
                    "the true value lies in its range");
                prop_assert!(hi - lo > THRESHOLD as f64 + 1e-9,
                    "cell {cell} (value {}) is pinned to [{lo}, {hi}] by the margins: \
                     {values:?} {constraints:?} {status:?}", values[cell]);
            }
        }
    }

    #[test]
    fn the_checker_catches_a_recoverable_cell() {
        // Publishing all but one part: the LP pins it exactly.
        let values = [30, 3, 12, 15];
        let cs = [Constraint::new(0, vec![1, 2, 3])];
        let status = [
            Status::Published,
            Status::Primary,
            Status::Published,
            Status::Published,
        ];
        let b = lp::bounds(&values, &cs, &status);
        assert_eq!(b.len(), 1);
        let (cell, (lo, hi)) = b[0];
        assert_eq!(cell, 1);
        assert!(
            (lo - 3.0).abs() < 1e-9 && (hi - 3.0).abs() < 1e-9,
            "{lo} {hi}"
        );
        // And two small cells whose sum is published: each known to lie in [0, 5].
        let values = [40, 2, 3, 35];
        let status = [
            Status::Published,
            Status::Primary,
            Status::Primary,
            Status::Published,
        ];
        let b = lp::bounds(&values, &[Constraint::new(0, vec![1, 2, 3])], &status);
        assert!(b.iter().all(|(_, (lo, hi))| hi - lo <= 5.0 + 1e-9), "{b:?}");
    }
}
