//! The attacker's view, for the tests: given every published cell and the constraints, the
//! smallest and largest value each withheld cell can take (a linear programme per bound,
//! solved with a dense two-phase simplex and Bland's rule; tables here are small).

use super::{Constraint, Status};

const EPS: f64 = 1e-9;

/// `(cell, (lowest, highest))` for each withheld cell; `highest` is infinite when nothing
/// bounds it.
pub fn bounds(
    values: &[u64],
    constraints: &[Constraint],
    status: &[Status],
) -> Vec<(usize, (f64, f64))> {
    let unknown: Vec<usize> = (0..values.len())
        .filter(|&i| !status[i].published())
        .collect();
    let col = |cell: usize| unknown.iter().position(|&u| u == cell);
    // Each constraint as sum(parts) - total = 0, published cells moved to the right-hand side.
    let mut rows: Vec<(Vec<f64>, f64)> = Vec::new();
    for c in constraints {
        let mut a = vec![0.0; unknown.len()];
        let mut b = 0.0;
        let mut any = false;
        for (cell, sign) in c
            .parts
            .iter()
            .map(|&p| (p, 1.0))
            .chain(std::iter::once((c.total, -1.0)))
        {
            match col(cell) {
                Some(j) => {
                    a[j] += sign;
                    any = true;
                }
                None => b -= sign * values[cell] as f64,
            }
        }
        if any {
            rows.push((a, b));
        }
    }
    unknown
        .iter()
        .enumerate()
        .map(|(j, &cell)| {
            let mut c = vec![0.0; unknown.len()];
            c[j] = 1.0;
            let lo = minimise(&rows, &c).unwrap_or(0.0);
            c[j] = -1.0;
            let hi = minimise(&rows, &c).map(|v| -v).unwrap_or(f64::INFINITY);
            (cell, (lo, hi))
        })
        .collect()
}

/// min c·x subject to A x = b, x ≥ 0. `None` when unbounded below. The system is feasible by
/// construction (the true values satisfy it).
fn minimise(rows: &[(Vec<f64>, f64)], c: &[f64]) -> Option<f64> {
    let n = c.len();
    let m = rows.len();
    // Tableau columns: n variables, m artificials, then the right-hand side.
    let width = n + m + 1;
    let mut t: Vec<Vec<f64>> = rows
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            let flip = if *b < 0.0 { -1.0 } else { 1.0 };
            let mut r = vec![0.0; width];
            for (rj, aj) in r.iter_mut().zip(a) {
                *rj = aj * flip;
            }
            r[n + i] = 1.0;
            r[width - 1] = b * flip;
            r
        })
        .collect();
    let mut basis: Vec<usize> = (n..n + m).collect();
    // Phase 1: minimise the artificials' sum.
    let mut cost1 = vec![0.0; width];
    for c in cost1.iter_mut().skip(n).take(m) {
        *c = 1.0;
    }
    run(&mut t, &mut basis, &cost1, n + m);
    // Drive artificials out of the basis; drop rows that are redundant.
    let mut i = 0;
    while i < t.len() {
        if basis[i] >= n {
            match (0..n).find(|&j| t[i][j].abs() > EPS) {
                Some(j) => pivot(&mut t, &mut basis, i, j),
                None => {
                    t.remove(i);
                    basis.remove(i);
                    continue;
                }
            }
        }
        i += 1;
    }
    let mut cost2 = vec![0.0; width];
    cost2[..n].copy_from_slice(c);
    if !run(&mut t, &mut basis, &cost2, n) {
        return None;
    }
    Some(
        basis
            .iter()
            .enumerate()
            .map(|(i, &j)| c[j] * t[i][width - 1])
            .sum(),
    )
}

fn pivot(t: &mut [Vec<f64>], basis: &mut [usize], r: usize, j: usize) {
    let p = t[r][j];
    for v in t[r].iter_mut() {
        *v /= p;
    }
    let row = t[r].clone();
    for (i, other) in t.iter_mut().enumerate() {
        if i != r {
            let f = other[j];
            if f.abs() > EPS {
                for (v, rv) in other.iter_mut().zip(&row) {
                    *v -= f * rv;
                }
            }
        }
    }
    basis[r] = j;
}

/// Simplex iterations over columns `0..allowed`, minimising `cost`; `false` if unbounded.
fn run(t: &mut [Vec<f64>], basis: &mut [usize], cost: &[f64], allowed: usize) -> bool {
    let width = cost.len();
    loop {
        // Reduced costs: c_j - c_B B^-1 A_j.
        let entering = (0..allowed).find(|&j| {
            if basis.contains(&j) {
                return false;
            }
            let z: f64 = basis
                .iter()
                .enumerate()
                .map(|(i, &b)| cost[b] * t[i][j])
                .sum();
            cost[j] - z < -EPS
        });
        let Some(j) = entering else {
            return true;
        };
        let mut best: Option<(usize, f64)> = None;
        for i in 0..t.len() {
            if t[i][j] > EPS {
                let ratio = t[i][width - 1] / t[i][j];
                let better = match best {
                    None => true,
                    Some((bi, br)) => {
                        ratio < br - EPS || ((ratio - br).abs() <= EPS && basis[i] < basis[bi])
                    }
                };
                if better {
                    best = Some((i, ratio));
                }
            }
        }
        let Some((r, _)) = best else {
            return false;
        };
        pivot(t, basis, r, j);
    }
}
