//! The index's bulk path: a first or large import, or an index pass over a source, places its
//! new records in batches rather than one transaction each.
//!
//! The rules are the incremental path's, applied in the same order, record by record — only
//! where the candidates come from differs. A batch reads once what its records can reach in
//! the store (the blocking keys they share, the children holding their NHS numbers and UPNs,
//! the name counts, the decisions on them), keeps it in memory beside the records it has placed
//! so far, and places each record exactly as [`super::linkage::Matcher::place`] would had the
//! records before it been upserted one by one: a verified identifier first; else the best
//! candidate at or above the upper threshold when no rule holds it back and the record agrees
//! with the child as a whole; else a new child, with a proposal for review between the
//! thresholds. Children a person ruled out are never chosen. Records the index already holds
//! keep their link (a link is never moved): an unchanged one is left alone, a changed one is
//! upserted incrementally, which proposes and never moves.
//!
//! Each batch is one transaction holding the index's write lock
//! ([`crate::foundation::store::Store::lock_index`]): the rows are written with multi-row
//! statements, and every link and proposal is one entry of the audit chain, appended in the
//! same transaction — a failed audit write leaves nothing applied. A call may run beside the
//! write it belongs to (an import's own records, [`After`]): its batches are placed and
//! written meanwhile, and none commits before that write has.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use weft_adapters::SourceRecord;
use weft_matching::{Comparison, Record, Scorer};

use super::linkage::{
    by_identifiers, counted, held, identifiers_conflict, refused_upn, second_from_a_source,
    stored_record, upn_only_holder, Candidate, LinkRows, Matcher, NewLink, Parts, Placement, Split,
    MAX_CANDIDATES, NEW_LINKS, POSSIBLE, SPLIT_OVER,
};
use super::partners::Partners;
use super::{Index, Link, Stored};
use crate::foundation::audit::{self, Entry};
use crate::foundation::metrics::elapsed_ms;
use crate::foundation::store::{placeholders, Cell, Staging};

/// The fewest records new to the index for which a call takes the bulk path; fewer are
/// upserted one at a time. Below it the bulk path's fixed cost (its reads of what the batch
/// can reach) buys little, and one short transaction per record lets views and other nodes'
/// writes interleave; above it, one transaction per record is what made a census import take
/// minutes.
pub const BULK_FROM: usize = 100;

/// Records placed in one transaction. Bounds the memory a batch holds and how long it holds
/// the index's write lock; later batches find the earlier ones in the store.
pub const BATCH: usize = 50_000;

/// Whether the write a bulk call belongs to has committed — an import's own records, written
/// while the index places them. The call's batches wait for it before they chain their audit
/// entries (the import's own entry takes the audit chain's lock first) and commit; if it
/// failed, they roll back and nothing of the call is applied.
#[derive(Clone)]
pub struct After(tokio::sync::watch::Receiver<Option<bool>>);

/// The other end of [`After`], held by the write: [`Applied::send`] once it has committed or
/// failed; dropped unsent, it says failed.
pub struct Applied(tokio::sync::watch::Sender<Option<bool>>);

impl After {
    pub fn channel() -> (Applied, After) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (Applied(tx), After(rx))
    }

    /// Waits until the write has ended; whether it committed.
    pub async fn applied(&self) -> bool {
        let mut rx = self.0.clone();
        rx.wait_for(Option::is_some)
            .await
            .is_ok_and(|v| *v == Some(true))
    }

    /// Whether the write has already failed.
    fn failed(&self) -> bool {
        *self.0.borrow() == Some(false)
    }
}

impl Applied {
    pub fn send(self, committed: bool) {
        self.0.send_replace(Some(committed));
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        self.0.send_if_modified(|v| {
            let unsent = v.is_none();
            if unsent {
                *v = Some(false);
            }
            unsent
        });
    }
}

/// What every batch of one call shares.
struct Call<'a> {
    source: &'a str,
    bulk_from: usize,
    after: Option<&'a After>,
    partners: &'a Partners<'a>,
}

/// Values per `IN (…)` list.
const IN_CHUNK: usize = 500;

/// The most records a batch's world may hold and still be kept for the call's next batch
/// (about 2 KB each in memory); beyond it the next batch reads what it reaches instead.
const CARRY_UP_TO: usize = 1_000_000;

/// What [`Index::upsert_many`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Upserted {
    /// Records the index now holds as given (placed, refreshed or already so).
    pub records: usize,
    /// Of those, records carrying an identifier that failed its check.
    pub flagged: usize,
    /// Records placed by the bulk path.
    pub bulk: usize,
    /// Records upserted one at a time (changed records, or too few new ones for a batch).
    pub incremental: usize,
    /// Records the index already held with the same identifiers and demographics.
    pub unchanged: usize,
    /// Records that could not be written (a failed batch counts all of its records).
    pub failed: usize,
    /// Milliseconds the bulk path spent reading what its batches reach, placing their records
    /// in memory, and writing them with their audit entries.
    pub read_ms: u64,
    pub place_ms: u64,
    pub write_ms: u64,
}

impl Index {
    /// Adds or refreshes many records of one source: new records in batches through the bulk
    /// path when there are at least [`BULK_FROM`] of them, the rest one at a time through
    /// [`Index::upsert`]. Unchanged records are not written at all.
    pub async fn upsert_many(&self, source: &str, recs: &[SourceRecord]) -> Upserted {
        self.upsert_many_in(source, recs, BULK_FROM, BATCH, None, &Partners::default())
            .await
    }

    /// [`Index::upsert_many`] of a pass's records, with the records of the pass each one is
    /// certain with ([`Partners`]).
    pub(crate) async fn upsert_many_of_pass(
        &self,
        source: &str,
        recs: &[SourceRecord],
        partners: &Partners<'_>,
    ) -> Upserted {
        self.upsert_many_in(source, recs, BULK_FROM, BATCH, None, partners)
            .await
    }

    /// [`Index::upsert_many`] beside the write the records belong to: nothing is committed
    /// before `after` says that write has, and nothing at all if it failed.
    pub async fn upsert_many_after(
        &self,
        source: &str,
        recs: &[SourceRecord],
        after: &After,
    ) -> Upserted {
        self.upsert_many_in(
            source,
            recs,
            BULK_FROM,
            BATCH,
            Some(after),
            &Partners::default(),
        )
        .await
    }

    /// [`Index::upsert_many`] with its threshold and batch size given (tests use small ones).
    #[cfg(test)]
    pub(crate) async fn upsert_many_with(
        &self,
        source: &str,
        recs: &[SourceRecord],
        bulk_from: usize,
        batch_size: usize,
    ) -> Upserted {
        self.upsert_many_of_pass_with(source, recs, bulk_from, batch_size, &Partners::default())
            .await
    }

    /// [`Index::upsert_many_of_pass`] with its threshold and batch size given.
    #[cfg(test)]
    pub(crate) async fn upsert_many_of_pass_with(
        &self,
        source: &str,
        recs: &[SourceRecord],
        bulk_from: usize,
        batch_size: usize,
        partners: &Partners<'_>,
    ) -> Upserted {
        self.upsert_many_in(source, recs, bulk_from, batch_size, None, partners)
            .await
    }

    async fn upsert_many_in(
        &self,
        source: &str,
        recs: &[SourceRecord],
        bulk_from: usize,
        batch_size: usize,
        after: Option<&After>,
        partners: &Partners<'_>,
    ) -> Upserted {
        let mut done = Upserted::default();
        let mut left = Left::Nothing;
        let batches: Vec<&[SourceRecord]> = recs.chunks(batch_size.max(1)).collect();
        let call = Call {
            source,
            bulk_from,
            after,
            partners,
        };
        for (n, &batch) in batches.iter().enumerate() {
            if after.is_some_and(After::failed) {
                done.failed += batch.len();
                continue;
            }
            // Counted apart, and added only once the batch has committed.
            let mut counted = Upserted::default();
            let next = batches.get(n + 1).copied();
            let later = match self
                .bulk_batch(&call, batch, next, &mut left, &mut counted)
                .await
            {
                Ok(later) => {
                    done.add(&counted);
                    // PostgreSQL plans the next batch's reads from its statistics of the
                    // index's tables, which its autovacuum refreshes only a minute or more
                    // later: planned for tables a fraction of their size, the reads of who
                    // holds a batch's identifiers, and of which of its records the index
                    // already holds, scan whole tables. Refreshed after the first batch and
                    // each time the tables may have doubled since, whether or not the next
                    // batch places in a kept world (it still reads which records are held).
                    // Not after a last batch that had one before it: no read of this call is
                    // left to plan, and the statistics already reflect tables of a size
                    // (the autovacuum catches up); a call's only batch refreshes them, so
                    // that the next call does not plan for empty tables.
                    let last = n + 1 == batches.len();
                    if counted.bulk > 0 && (n + 1).is_power_of_two() && (n == 0 || !last) {
                        if let Err(e) = self.store.analyse_index().await {
                            tracing::warn!(error = %logged(&e), "index statistics not refreshed");
                        }
                    }
                    later
                }
                Err(e) => {
                    tracing::warn!(source, error = %logged(&e), records = batch.len(), "bulk index batch failed; nothing of it applied");
                    done.failed += batch.len();
                    continue;
                }
            };
            if let Some(after) = after.filter(|_| !later.is_empty()) {
                if !after.applied().await {
                    done.failed += later.len();
                    continue;
                }
            }
            for i in later {
                let rec = &batch[i];
                match self.upsert_with(source, rec, partners).await {
                    Ok((_, flagged)) => {
                        done.records += 1;
                        done.incremental += 1;
                        done.flagged += usize::from(flagged);
                    }
                    Err(e) => {
                        tracing::warn!(source, error = %logged(&e), "index upsert failed");
                        done.failed += 1;
                    }
                }
            }
        }
        if done.bulk > 0 {
            tracing::info!(
                source,
                bulk = done.bulk,
                incremental = done.incremental,
                unchanged = done.unchanged,
                read_ms = done.read_ms,
                place_ms = done.place_ms,
                write_ms = done.write_ms,
                "index bulk path"
            );
        }
        done
    }

    /// Places one batch's new records in one transaction; returns the positions of the
    /// records left for the incremental path, in order.
    ///
    /// `left` is what the call's previous batch left ([`Left`]): a world that held the whole
    /// index, placed in without reading the store again, or this batch already placed there
    /// while the previous one was written — either only when no other change to the index
    /// came between (the index's epoch moved by this batch's lock alone). It is replaced by
    /// what this batch leaves once it has committed: while it is written, the call's `next`
    /// batch is placed in its world, so that the store's work of writing one batch and the
    /// gateway's of placing the next overlap.
    async fn bulk_batch<'r>(
        &self,
        call: &Call<'_>,
        batch: &'r [SourceRecord],
        next: Option<&'r [SourceRecord]>,
        left: &mut Left<'r>,
        done: &mut Upserted,
    ) -> Result<Vec<usize>, sqlx::Error> {
        let &Call { source, after, .. } = call;
        let store = &self.store;
        let mut conn = store.bulk_connection().await?;
        let mut tx = store.begin_write_on(&mut conn).await?;
        let epoch = store.lock_index(&mut tx).await?;
        let (placed, mut world) = match std::mem::replace(left, Left::Nothing) {
            Left::Ahead(a) if a.epoch + 1 == epoch => (a.placed, a.world),
            Left::World(c) if c.epoch + 1 == epoch => {
                self.place_batch(&mut tx, call, batch, Some(c.world), &[])
                    .await?
            }
            _ => self.place_batch(&mut tx, call, batch, None, &[]).await?,
        };
        done.records += placed.counted.records;
        done.unchanged += placed.counted.unchanged;
        done.flagged += placed.counted.flagged;
        if placed.new.is_empty() {
            tx.rollback().await?;
            return Ok(placed.later);
        }
        // The next batch is placed ahead only in a world that is the whole index, and only
        // when this batch leaves nothing to upsert one at a time (each upsert moves the epoch,
        // which would void it).
        let keep = world
            .as_ref()
            .is_some_and(|w| w.whole && w.known.len() <= CARRY_UP_TO);
        let ahead_world = match next {
            Some(_) if keep && placed.later.is_empty() => world.take(),
            _ => None,
        };
        let clock = Instant::now();
        let (written, placed_ahead) =
            tokio::join!(self.write_batch(tx, source, &placed, after), async {
                match (next, ahead_world) {
                    (Some(next), Some(w)) => {
                        Some(self.place_ahead(call, next, w, &placed.new).await)
                    }
                    _ => None,
                }
            });
        written?;
        match placed_ahead {
            Some(Ok((placed, world))) => {
                *left = Left::Ahead(Ahead {
                    epoch,
                    placed,
                    world,
                })
            }
            Some(Err(e)) => {
                // The next batch is placed again under its own lock.
                tracing::debug!(error = %logged(&e), "the next batch was not placed ahead");
            }
            None => {
                if let Some(world) = world.filter(|_| keep) {
                    *left = Left::World(Carried { world, epoch });
                }
            }
        }
        done.read_ms += placed.counted.read_ms;
        done.place_ms += placed.counted.place_ms;
        done.write_ms += elapsed_ms(clock);
        done.records += placed.new.len();
        done.bulk += placed.new.len();
        done.flagged += placed.new.iter().filter(|n| n.stored.flagged).count();
        Ok(placed.later)
    }

    /// Sorts a batch's records against the index — new, unchanged, or changed (left for the
    /// incremental path) — and places the new ones in `kept`, or in a world read on `conn`.
    /// `pending` are the new records of a batch being written meanwhile, which the store
    /// will hold as they are. Returns the world only when the batch had enough new records
    /// to place.
    async fn place_batch<'r>(
        &self,
        conn: &mut AnyConnection,
        call: &Call<'_>,
        batch: &'r [SourceRecord],
        kept: Option<World>,
        pending: &[New<'_>],
    ) -> Result<(Placed<'r>, Option<World>), sqlx::Error> {
        let &Call {
            source,
            bulk_from,
            partners,
            ..
        } = call;
        let mut counted = Upserted::default();
        let mut existing = existing(conn, source, batch).await?;
        if !pending.is_empty() {
            let pending: HashMap<&str, &Stored> =
                pending.iter().map(|n| (n.local_id, &n.stored)).collect();
            for rec in batch {
                if let Some(s) = pending.get(rec.local_id.as_str()) {
                    existing.insert(rec.local_id.clone(), Existing::written(s));
                }
            }
        }
        let mut seen = HashSet::with_capacity(batch.len());
        let (mut fresh, mut later) = (Vec::new(), Vec::new());
        for (i, rec) in batch.iter().enumerate() {
            pause(i).await;
            if !seen.insert(rec.local_id.as_str()) {
                // The same record twice: the second is a change to the first.
                later.push(i);
                continue;
            }
            let s = Stored::new(rec);
            match existing.get(&rec.local_id) {
                None => fresh.push((i, s)),
                Some(e) if e.unchanged(&s) => {
                    counted.records += 1;
                    counted.unchanged += 1;
                    counted.flagged += usize::from(s.flagged);
                }
                Some(_) => later.push(i),
            }
        }
        if fresh.is_empty() || fresh.len() < bulk_from {
            later.extend(fresh.into_iter().map(|(i, _)| i));
            later.sort_unstable();
            let placed = Placed {
                new: Vec::new(),
                placements: Vec::new(),
                writes: Writes::default(),
                later,
                counted,
            };
            return Ok((placed, None));
        }
        let mut new = Vec::with_capacity(fresh.len());
        for (j, (i, s)) in fresh.into_iter().enumerate() {
            let form = s.record.form();
            new.push(New {
                local_id: batch[i].local_id.as_str(),
                keys: self.matcher.split_keys(&s.record),
                parts: Parts::of(&form),
                form,
                stored: s,
            });
            pause(j).await;
        }
        let clock = Instant::now();
        let mut world = match kept {
            Some(mut world) => {
                world.next_batch(conn, source, &new).await?;
                world
            }
            None => World::load(&self.matcher, conn, source, &new).await?,
        };
        counted.read_ms = elapsed_ms(clock);
        let clock = Instant::now();
        let mut placements = Vec::with_capacity(new.len());
        for (i, n) in new.iter().enumerate() {
            let p = world
                .place(
                    &self.matcher,
                    conn,
                    source,
                    n,
                    partners.of(source, n.local_id),
                )
                .await?;
            world.add(&self.matcher, conn, source, n, &p.child).await?;
            placements.push(p);
            pause(i).await;
        }
        counted.place_ms = elapsed_ms(clock);
        let placed = Placed {
            new,
            placements,
            writes: world.take_writes(),
            later,
            counted,
        };
        Ok((placed, Some(world)))
    }

    /// [`Index::place_batch`] for the call's next batch, on a connection of its own and
    /// outside any transaction, while `pending` (the batch before it) is being written: what
    /// it reads is the store as it was before that batch, which is the index as the next
    /// batch will find it under its lock if the epoch shows nobody else wrote in between.
    async fn place_ahead<'r>(
        &self,
        call: &Call<'_>,
        batch: &'r [SourceRecord],
        world: World,
        pending: &[New<'_>],
    ) -> Result<(Placed<'r>, Option<World>), sqlx::Error> {
        let mut conn = self.store.pool.acquire().await?;
        self.place_batch(&mut conn, call, batch, Some(world), pending)
            .await
    }

    /// Writes a placed batch in `tx` and commits it (once `after` says so).
    async fn write_batch(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        source: &str,
        placed: &Placed<'_>,
        after: Option<&After>,
    ) -> Result<(), sqlx::Error> {
        let mut staging = self.store.staging();
        let written = match write(&self.matcher, &mut tx, &mut staging, source, placed, after).await
        {
            Ok(()) => tx.commit().await,
            Err(e) => {
                // Ended before the staging tables are dropped: a drop waits for it.
                let _ = tx.rollback().await;
                Err(e)
            }
        };
        staging.finish().await;
        written
    }
}

/// Records a long loop handles between two yields to the runtime: the next batch is placed
/// in the same task as this batch's write, which must keep feeding the store.
const PAUSE_EVERY: usize = 64;

async fn pause(i: usize) {
    if i % PAUSE_EVERY == PAUSE_EVERY - 1 {
        tokio::task::yield_now().await;
    }
}

impl Upserted {
    fn add(&mut self, o: &Upserted) {
        self.records += o.records;
        self.flagged += o.flagged;
        self.bulk += o.bulk;
        self.incremental += o.incremental;
        self.unchanged += o.unchanged;
        self.failed += o.failed;
        self.read_ms += o.read_ms;
        self.place_ms += o.place_ms;
        self.write_ms += o.write_ms;
    }
}

/// A record new to the index, with its blocking keys (each with what splits its block when
/// the block is large) and its stored form.
struct New<'a> {
    local_id: &'a str,
    stored: Stored,
    keys: Vec<(String, String, Option<Split>)>,
    form: String,
    parts: Parts,
}

/// A source record as the index already holds it.
struct Existing {
    linked: bool,
    identifiers: String,
    demographics: String,
    /// `source_records.restricted`.
    restricted: i64,
    /// Whether it has an active row in `match_links`.
    has_link: bool,
}

impl Existing {
    /// A record as the store holds it once the batch placing it has committed.
    fn written(s: &Stored) -> Existing {
        Existing {
            linked: true,
            identifiers: s.identifiers.clone(),
            demographics: s.demographics.clone(),
            restricted: s.restricted,
            has_link: true,
        }
    }

    /// Whether an upsert of `s` would change nothing: linked, with the same identifiers,
    /// demographics and restriction, and its link row written. (A restriction set or lifted
    /// changes nothing the matcher reads, but the record must be rewritten for it.)
    fn unchanged(&self, s: &Stored) -> bool {
        self.linked
            && self.has_link
            && self.identifiers == s.identifiers
            && self.demographics == s.demographics
            && self.restricted == s.restricted
    }
}

/// The index's rows for a batch's records, by local id.
async fn existing(
    conn: &mut AnyConnection,
    source: &str,
    batch: &[SourceRecord],
) -> Result<HashMap<String, Existing>, sqlx::Error> {
    let mut out = HashMap::new();
    for chunk in batch.chunks(IN_CHUNK) {
        let mut sql = String::from(
            "SELECT sr.local_id AS local_id, sr.child_id AS child_id, sr.identifiers AS identifiers, \
             sr.demographics AS demographics, sr.restricted AS restricted, (SELECT COUNT(*) FROM match_links ml \
             WHERE ml.source = sr.source AND ml.local_id = sr.local_id AND ml.status = 'active') AS links \
             FROM source_records sr WHERE sr.source = $1 AND sr.local_id IN (",
        );
        sql.push_str(&placeholders(2, chunk.len()));
        sql.push(')');
        let mut q = sqlx::query(&sql).bind(source);
        for r in chunk {
            q = q.bind(&r.local_id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let child: Option<String> = row.try_get("child_id")?;
            out.insert(
                row.try_get("local_id")?,
                Existing {
                    linked: child.is_some(),
                    identifiers: row.try_get("identifiers")?,
                    demographics: row.try_get("demographics")?,
                    restricted: row.try_get("restricted")?,
                    has_link: row.try_get::<i64, _>("links")? > 0,
                },
            );
        }
    }
    Ok(out)
}

/// A record blocking can reach: from the store, or placed earlier in the batch.
struct Known {
    source: String,
    local_id: String,
    /// As the store keeps it with its keys ([`Record::form`]), which is what the incremental
    /// path scores candidates on.
    form: Record,
    child: Option<String>,
}

/// What the walk of a block list reads of a record in `known` before it scores it, in a dense
/// array beside `known`: in a large census most records a block holds are passed over on these
/// alone (another part in a split block, the record itself, another UPN), and reading each
/// from its `Known` and the strings that hang off it cost a cache miss for every record visited.
#[derive(Clone, Copy)]
struct Glance {
    /// The place in `known` of the first entry for this `(source, local_id)`: the same for
    /// every entry of one record.
    record: u32,
    /// The last walk that visited this entry ([`World::walks`]).
    visited: u32,
    /// What a large block is split on, from the stored form.
    parts: Parts,
    /// Hashes of the form's NHS number and UPN, [`ABSENT`] when it has none.
    nhs: u64,
    upn: u64,
}

/// A [`Glance`]'s hash of an identifier the form does not hold.
const ABSENT: u64 = 0;

/// An identifier's hash for a [`Glance`]: two that differ are different identifiers.
fn glance_hash(value: Option<&impl std::hash::Hash>) -> u64 {
    use std::hash::Hasher;
    value.map_or(ABSENT, |v| {
        let mut h = std::hash::DefaultHasher::new();
        v.hash(&mut h);
        h.finish().max(1)
    })
}

impl Glance {
    fn of(record: u32, form: &Record, parts: Parts) -> Glance {
        Glance {
            record,
            visited: 0,
            parts,
            nhs: glance_hash(form.nhs_number.as_ref()),
            upn: glance_hash(form.upn.as_ref()),
        }
    }

    /// [`identifiers_conflict`] where the hashes settle it: `Some(true)` when both hold an
    /// identifier of one kind and its hashes differ, `Some(false)` when no kind is held by
    /// both, `None` when a kind's hashes agree and its values must be compared.
    fn conflict(&self, nhs: u64, upn: u64) -> Option<bool> {
        let mut unsure = false;
        for (a, b) in [(nhs, self.nhs), (upn, self.upn)] {
            if a != ABSENT && b != ABSENT {
                if a != b {
                    return Some(true);
                }
                unsure = true;
            }
        }
        (!unsure).then_some(false)
    }
}

/// A batch sorted against the index, its new records placed in memory, not yet written.
struct Placed<'r> {
    new: Vec<New<'r>>,
    placements: Vec<Placement>,
    writes: Writes,
    /// Positions of the records left for the incremental path, in order.
    later: Vec<usize>,
    /// The unchanged records, and the time read and placing took.
    counted: Upserted,
}

/// What placing a batch changed in its world besides the records themselves.
#[derive(Default)]
struct Writes {
    /// Children the batch created, in order.
    created: Vec<String>,
    /// Name counts the batch moved: comparison, value, and what it adds to `n` and `sq`.
    terms: Vec<(Comparison, String, i64, i64)>,
}

/// What a batch leaves for the call's next one ([`Index::bulk_batch`]).
enum Left<'r> {
    Nothing,
    /// Its world, which held the whole index.
    World(Carried),
    /// The next batch, placed in that world while this one was written.
    Ahead(Ahead<'r>),
}

/// The call's next batch, placed while the batch before it was written ([`Index::bulk_batch`]).
/// Placed in that batch's world, from what the store held before it: it stands only if that
/// batch committed and the index's epoch, when the next batch takes the lock, is one past the
/// epoch that batch wrote at.
struct Ahead<'r> {
    epoch: i64,
    placed: Placed<'r>,
    world: Option<World>,
}

/// A batch's world kept for the next batch of the same call, and the index's epoch at which
/// it was written: it is the index as the store holds it only if no change came after.
struct Carried {
    world: World,
    epoch: i64,
}

/// What a batch can reach of the index, in memory, kept up to date as it places records.
struct World {
    /// Read from the whole index rather than from what the batch's records reach: with the
    /// records it has placed, it is the index, and can serve the next batch.
    whole: bool,
    rules: Vec<String>,
    known: Vec<Known>,
    /// One for each entry of `known`, at the same place.
    glances: Vec<Glance>,
    /// How many walks of block lists this world has made ([`World::best`]), to mark the
    /// entries each one visits.
    walks: u32,
    /// Where each `(source, local_id)` is in `known`.
    at: HashMap<(String, String), u32>,
    by_key: HashMap<(u16, String), Vec<u32>>,
    /// Every record of each child loaded so far (full, as `source_records` holds it), with
    /// its source; a child is loaded from the store the first time a rule needs all of its
    /// records.
    children: HashMap<String, Vec<(String, Record)>>,
    /// Children holding each verified `(kind, value)`.
    holders: HashMap<(String, String), BTreeSet<String>>,
    /// Name counts (`match_terms`) for the batch's names, as read and as now.
    terms_read: HashMap<(Comparison, String), (i64, i64)>,
    terms: HashMap<(Comparison, String), (i64, i64)>,
    /// Children a person ruled out for a record, by local id.
    excluded: HashMap<String, Vec<String>>,
    /// Children created by this batch, in order.
    created: Vec<String>,
}

impl World {
    async fn load(
        matcher: &Matcher,
        conn: &mut AnyConnection,
        source: &str,
        new: &[New<'_>],
    ) -> Result<World, sqlx::Error> {
        let mut w = World {
            whole: false,
            rules: Vec::new(),
            known: Vec::new(),
            glances: Vec::new(),
            walks: 0,
            at: HashMap::new(),
            by_key: HashMap::new(),
            children: HashMap::new(),
            holders: HashMap::new(),
            terms_read: HashMap::new(),
            terms: HashMap::new(),
            excluded: HashMap::new(),
            created: Vec::new(),
        };
        let held: i64 = sqlx::query("SELECT COUNT(*) AS n FROM source_records")
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
        const SELECT: &str = "SELECT mk.rule AS rule, mk.key AS key, mk.source AS source, \
             mk.local_id AS local_id, mk.form AS form, sr.child_id AS child_id FROM match_keys mk \
             JOIN source_records sr ON sr.source = mk.source AND sr.local_id = mk.local_id";
        w.whole = held <= 4 * new.len() as i64;
        if w.whole {
            // A small index beside the batch: one pass over its keys is cheaper than lookups,
            // and keeping every one makes the world the whole index.
            let rows = sqlx::query(SELECT).fetch_all(&mut *conn).await?;
            for row in &rows {
                let rule: String = row.try_get("rule")?;
                let key: String = row.try_get("key")?;
                let r = w.rule(&rule);
                w.known_row(r, key, row)?;
            }
        } else {
            // The blocking keys the batch's records share with records in the store.
            let mut wanted: HashMap<u16, HashSet<&str>> = HashMap::new();
            for n in new {
                for (rule, key, _) in &n.keys {
                    let r = w.rule(rule);
                    wanted.entry(r).or_default().insert(key.as_str());
                }
            }
            for (r, keys) in wanted {
                let keys: Vec<&str> = keys.into_iter().collect();
                let rule = w.rules[usize::from(r)].clone();
                for chunk in keys.chunks(IN_CHUNK) {
                    let mut sql = format!("{SELECT} WHERE mk.rule = $1 AND mk.key IN (");
                    sql.push_str(&placeholders(2, chunk.len()));
                    sql.push(')');
                    let mut q = sqlx::query(&sql).bind(&rule);
                    for k in chunk {
                        q = q.bind(*k);
                    }
                    for row in q.fetch_all(&mut *conn).await? {
                        let key: String = row.try_get("key")?;
                        w.known_row(r, key, &row)?;
                    }
                }
            }
        }
        // Children holding NHS numbers and UPNs: every one for the whole world, else the batch's.
        if w.whole {
            let rows = sqlx::query(
                "SELECT ri.kind AS kind, ri.value AS value, sr.child_id AS child_id \
                 FROM record_identifiers ri JOIN source_records sr \
                 ON sr.source = ri.source AND sr.local_id = ri.local_id \
                 WHERE sr.child_id IS NOT NULL AND ri.kind IN ('nhs_number', 'upn')",
            )
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                w.holders
                    .entry((row.try_get("kind")?, row.try_get("value")?))
                    .or_default()
                    .insert(row.try_get("child_id")?);
            }
        } else {
            for kind in ["nhs_number", "upn"] {
                let values: BTreeSet<&str> = new
                    .iter()
                    .filter_map(|n| national(&n.stored.record, kind))
                    .collect();
                let values: Vec<&str> = values.into_iter().collect();
                for chunk in values.chunks(IN_CHUNK) {
                    let mut sql = String::from(
                        "SELECT ri.value AS value, sr.child_id AS child_id \
                         FROM record_identifiers ri JOIN source_records sr \
                         ON sr.source = ri.source AND sr.local_id = ri.local_id \
                         WHERE sr.child_id IS NOT NULL AND ri.kind = $1 AND ri.value IN (",
                    );
                    sql.push_str(&placeholders(2, chunk.len()));
                    sql.push(')');
                    let mut q = sqlx::query(&sql).bind(kind);
                    for v in chunk {
                        q = q.bind(*v);
                    }
                    for row in q.fetch_all(&mut *conn).await? {
                        w.holders
                            .entry((kind.to_string(), row.try_get("value")?))
                            .or_default()
                            .insert(row.try_get("child_id")?);
                    }
                }
            }
        }
        // The name counts: every one for the whole world, else the batch's names'.
        if w.whole {
            for row in sqlx::query("SELECT comparison, value, n, sq FROM match_terms")
                .fetch_all(&mut *conn)
                .await?
            {
                let c: String = row.try_get("comparison")?;
                let Some(c) = matcher.tf_comparisons().find(|x| x.as_str() == c) else {
                    continue;
                };
                let n: (i64, i64) = (row.try_get("n")?, row.try_get("sq")?);
                w.terms_read.insert((c, row.try_get("value")?), n);
            }
        } else {
            for c in matcher.tf_comparisons() {
                let mut values: BTreeSet<&str> = new
                    .iter()
                    .filter_map(|n| counted(c, &n.stored.record))
                    .collect();
                values.insert("");
                let values: Vec<&str> = values.into_iter().collect();
                for chunk in values.chunks(IN_CHUNK) {
                    let mut sql = String::from(
                        "SELECT value, n, sq FROM match_terms WHERE comparison = $1 AND value IN (",
                    );
                    sql.push_str(&placeholders(2, chunk.len()));
                    sql.push(')');
                    let mut q = sqlx::query(&sql).bind(c.as_str());
                    for v in chunk {
                        q = q.bind(*v);
                    }
                    for row in q.fetch_all(&mut *conn).await? {
                        let n: (i64, i64) = (row.try_get("n")?, row.try_get("sq")?);
                        w.terms_read.insert((c, row.try_get("value")?), n);
                    }
                }
            }
        }
        w.terms = w.terms_read.clone();
        // Every record of every child a rule may ask about (the candidates' children, the
        // holders of the batch's identifiers), read now rather than one child at a time as
        // records are placed: a round trip per record is what made a census import slow.
        if w.whole {
            w.load_every_child(conn).await?;
        } else {
            let children: Vec<String> = w
                .known
                .iter()
                .filter_map(|k| k.child.clone())
                .chain(w.holders.values().flatten().cloned())
                .collect();
            w.load_children(conn, children).await?;
        }
        w.load_excluded(conn, source, new).await?;
        w.reserve(new);
        Ok(w)
    }

    /// Readies a world kept from the call's previous batch for the next: what that batch
    /// wrote is now the store's, and the decisions on the new batch's records are read.
    async fn next_batch(
        &mut self,
        conn: &mut AnyConnection,
        source: &str,
        new: &[New<'_>],
    ) -> Result<(), sqlx::Error> {
        self.reserve(new);
        self.load_excluded(conn, source, new).await
    }

    /// Takes what placing the batch changed and has to be written; the world then holds it
    /// as read, ready for the next batch.
    fn take_writes(&mut self) -> Writes {
        let terms: Vec<(Comparison, String, i64, i64)> = self
            .terms
            .iter()
            .filter_map(|((c, v), (n, sq))| {
                let (n0, sq0) = self
                    .terms_read
                    .get(&(*c, v.clone()))
                    .copied()
                    .unwrap_or((0, 0));
                (n != &n0 || sq != &sq0).then(|| (*c, v.clone(), n - n0, sq - sq0))
            })
            .collect();
        self.terms_read.clone_from(&self.terms);
        Writes {
            created: std::mem::take(&mut self.created),
            terms,
        }
    }

    /// Decisions a person made on the batch's records (a record the index never held has
    /// none, unless its row was removed by hand: read them all the same).
    async fn load_excluded(
        &mut self,
        conn: &mut AnyConnection,
        source: &str,
        new: &[New<'_>],
    ) -> Result<(), sqlx::Error> {
        self.excluded.clear();
        for chunk in new.chunks(IN_CHUNK) {
            let mut sql = String::from(
                "SELECT local_id, child_id FROM match_links WHERE source = $1 \
                 AND status IN ('rejected', 'split') AND local_id IN (",
            );
            sql.push_str(&placeholders(2, chunk.len()));
            sql.push(')');
            let mut q = sqlx::query(&sql).bind(source);
            for n in chunk {
                q = q.bind(n.local_id);
            }
            for row in q.fetch_all(&mut *conn).await? {
                self.excluded
                    .entry(row.try_get("local_id")?)
                    .or_default()
                    .push(row.try_get("child_id")?);
            }
        }
        Ok(())
    }

    /// Room for the batch's records, made once rather than by doubling as they are placed.
    fn reserve(&mut self, new: &[New<'_>]) {
        self.known.reserve(new.len());
        self.glances.reserve(new.len());
        self.at.reserve(new.len());
        self.children.reserve(new.len());
        self.by_key.reserve(new.iter().map(|n| n.keys.len()).sum());
    }

    fn rule(&mut self, name: &str) -> u16 {
        match self.rules.iter().position(|r| r == name) {
            Some(i) => i as u16,
            None => {
                self.rules.push(name.to_string());
                (self.rules.len() - 1) as u16
            }
        }
    }

    fn known_row(
        &mut self,
        rule: u16,
        key: String,
        row: &sqlx::any::AnyRow,
    ) -> Result<(), sqlx::Error> {
        let source: String = row.try_get("source")?;
        let local_id: String = row.try_get("local_id")?;
        let at = match self.at.get(&(source.clone(), local_id.clone())) {
            Some(&at) => at,
            None => {
                let at = self.known.len() as u32;
                self.at.insert((source.clone(), local_id.clone()), at);
                let form: String = row.try_get("form")?;
                let record = Record::from_form(local_id.clone(), &form);
                self.glances.push(Glance::of(at, &record, Parts::of(&form)));
                self.known.push(Known {
                    form: record,
                    child: row.try_get("child_id")?,
                    source,
                    local_id,
                });
                at
            }
        };
        // Each row is read once and `match_keys`' primary key holds a record once under a
        // key: no list needs checking for the record already in it.
        self.by_key.entry((rule, key)).or_default().push(at);
        Ok(())
    }

    /// Loads every record of the children not yet loaded.
    async fn load_children(
        &mut self,
        conn: &mut AnyConnection,
        children: Vec<String>,
    ) -> Result<(), sqlx::Error> {
        if children.is_empty() {
            return Ok(());
        }
        let wanted: BTreeSet<String> = children
            .into_iter()
            .filter(|c| !self.children.contains_key(c))
            .collect();
        let wanted: Vec<String> = wanted.into_iter().collect();
        for chunk in wanted.chunks(IN_CHUNK) {
            let mut sql = String::from(
                "SELECT child_id, source, local_id, identifiers, demographics FROM source_records WHERE child_id IN (",
            );
            sql.push_str(&placeholders(1, chunk.len()));
            sql.push(')');
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q.bind(c);
                self.children.insert(c.clone(), Vec::new());
            }
            for row in q.fetch_all(&mut *conn).await? {
                let child: String = row.try_get("child_id")?;
                let r = stored_record(
                    &row.try_get::<String, _>("local_id")?,
                    &row.try_get::<String, _>("demographics")?,
                    &row.try_get::<String, _>("identifiers")?,
                );
                let source: String = row.try_get("source")?;
                self.children.entry(child).or_default().push((source, r));
            }
        }
        Ok(())
    }

    /// Loads every record of every child in the store: one pass, for a small index.
    async fn load_every_child(&mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT child_id, source, local_id, identifiers, demographics FROM source_records \
             WHERE child_id IS NOT NULL",
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let child: String = row.try_get("child_id")?;
            let r = stored_record(
                &row.try_get::<String, _>("local_id")?,
                &row.try_get::<String, _>("demographics")?,
                &row.try_get::<String, _>("identifiers")?,
            );
            let source: String = row.try_get("source")?;
            self.children.entry(child).or_default().push((source, r));
        }
        Ok(())
    }

    fn count(&self, c: Comparison, v: &str) -> (i64, i64) {
        self.terms
            .get(&(c, v.to_string()))
            .copied()
            .unwrap_or((0, 0))
    }

    /// [`Matcher::place`] over what the batch can reach.
    async fn place(
        &mut self,
        matcher: &Matcher,
        conn: &mut AnyConnection,
        source: &str,
        n: &New<'_>,
        partners: &[Link],
    ) -> Result<Placement, sqlx::Error> {
        let record = &n.stored.record;
        let excluded = self.excluded.get(n.local_id).cloned().unwrap_or_default();
        let holders: Vec<(&'static str, String)> = ["nhs_number", "upn"]
            .into_iter()
            .filter_map(|kind| {
                let value = national(record, kind)?;
                self.holders
                    .get(&(kind.to_string(), value.to_string()))
                    .and_then(|h| h.iter().find(|c| !excluded.contains(c)).cloned())
                    .map(|child| (kind, child))
            })
            .collect();
        let refused = match upn_only_holder(record, &holders) {
            Some(child) => {
                self.load_children(conn, vec![child.to_string()]).await?;
                let kin = self.children.get(child).map(Vec::as_slice);
                refused_upn(
                    record,
                    child,
                    kin.unwrap_or_default().iter().map(|(_, r)| r),
                )
            }
            None => None,
        };
        if refused.is_none() {
            if let Some(placed) = by_identifiers(holders) {
                return Ok(placed);
            }
        }
        let (tf, population) = matcher.tf_from(record, |c, v| self.count(c, v));
        // The twin rule always, as the incremental path runs it (`Matcher::candidates`).
        let scorer = Scorer::new(&matcher.model, &tf, population).with_twin_rule();
        let (best, rival) = self
            .best(matcher, conn, &scorer, source, n, &excluded)
            .await?;
        let mut second = false;
        let ambiguous = best
            .as_ref()
            .is_some_and(|c| matcher.rivalled(&c.score, rival.as_ref().map(|r| &r.score)));
        if let Some(c) = best
            .as_ref()
            .filter(|c| c.score.links(matcher.upper) && !ambiguous)
        {
            self.load_children(conn, vec![c.child.clone()]).await?;
            let kin = self.children.get(&c.child).map(Vec::as_slice);
            let kin = kin.unwrap_or_default();
            let records = kin.iter().map(|(_, r)| r);
            if weft_matching::link::agrees(&scorer, record, &c.record, records) {
                let kin = kin.iter().map(|(s, r)| (s.as_str(), r.id.as_str()));
                let another = second_from_a_source(kin, source, n.local_id, partners);
                second = matcher.holds_back(c.score.probability, another);
                if !second {
                    return Ok(Placement::probabilistic(c.child.clone(), best, refused));
                }
            }
        }
        let child = uuid::Uuid::new_v4().to_string();
        self.children.insert(child.clone(), Vec::new());
        self.created.push(child.clone());
        Ok(Placement {
            child,
            method: "new".into(),
            scored: None,
            review: matcher.proposals(best, rival, held(second, ambiguous), refused),
        })
    }

    /// The best candidate child and the best of another child, as [`Matcher::candidates`]
    /// would rank them first and second.
    async fn best(
        &mut self,
        matcher: &Matcher,
        conn: &mut AnyConnection,
        scorer: &Scorer<'_>,
        source: &str,
        n: &New<'_>,
        excluded: &[String],
    ) -> Result<(Option<Candidate>, Option<Candidate>), sqlx::Error> {
        let record = &n.stored.record;
        let floor = matcher.lower.min(POSSIBLE);
        let mut seen = 0i64;
        let mut scored: Vec<(u32, weft_matching::Score)> = Vec::new();
        // The record itself, should the store already hold keys for it: not counted in the
        // size of its blocks, as `Matcher::candidates` leaves it out of its count.
        let own = self
            .at
            .get(&(source.to_string(), n.local_id.to_string()))
            .copied();
        let own_record = own.map(|o| self.glances[o as usize].record);
        let (nhs, upn) = (
            glance_hash(record.nhs_number.as_ref()),
            glance_hash(record.upn.as_ref()),
        );
        self.walks = self.walks.wrapping_add(1);
        if self.walks == 0 {
            self.glances.iter_mut().for_each(|g| g.visited = 0);
            self.walks = 1;
        }
        let walk = self.walks;
        'keys: for (rule, key, split) in &n.keys {
            let Some(r) = self.rules.iter().position(|x| x == rule) else {
                continue;
            };
            let Some(list) = self.by_key.get(&(r as u16, key.clone())) else {
                continue;
            };
            let size = list.len() - own.map_or(0, |o| usize::from(list.contains(&o)));
            let split = split.filter(|s| n.parts.has(*s) && size > SPLIT_OVER);
            for &at in list {
                let g = &mut self.glances[at as usize];
                if split.is_some_and(|s| !g.parts.reaches(n.parts, s)) {
                    continue;
                }
                if seen >= MAX_CANDIDATES {
                    break 'keys;
                }
                if Some(g.record) == own_record || g.visited == walk {
                    continue;
                }
                g.visited = walk;
                seen += 1;
                let conflict = g.conflict(nhs, upn);
                let k = &self.known[at as usize];
                if conflict.unwrap_or_else(|| identifiers_conflict(record, &k.form)) {
                    continue;
                }
                let score = scorer.score(record, &k.form);
                if score.probability >= floor {
                    scored.push((at, score));
                }
            }
        }
        let known = &self.known;
        scored.sort_by(|(a, sa), (b, sb)| {
            let (a, b) = (&known[*a as usize], &known[*b as usize]);
            sb.weight
                .total_cmp(&sa.weight)
                .then_with(|| (&a.source, &a.local_id).cmp(&(&b.source, &b.local_id)))
        });
        // A child holding a verified NHS number or UPN other than the record's is no
        // candidate, through whichever of its records blocking reached.
        let national = record.nhs_number.is_some() || record.upn.is_some();
        if national {
            // Cloned only when some are missing, which after the batch's first read is rare.
            let missing: Vec<String> = scored
                .iter()
                .filter_map(|(at, _)| self.known[*at as usize].child.as_ref())
                .filter(|c| !self.children.contains_key(*c))
                .cloned()
                .collect();
            self.load_children(conn, missing).await?;
        }
        let mut best: Option<Candidate> = None;
        for (at, score) in scored {
            let k = &self.known[at as usize];
            let Some(child) = &k.child else { continue };
            if excluded.contains(child) || best.as_ref().is_some_and(|b| &b.child == child) {
                continue;
            }
            if national
                && self
                    .children
                    .get(child)
                    .is_some_and(|rs| rs.iter().any(|(_, kin)| identifiers_conflict(record, kin)))
            {
                continue;
            }
            let c = Candidate {
                explanation: scorer.explain(record, &k.form),
                child: child.clone(),
                source: k.source.clone(),
                local_id: k.local_id.clone(),
                score,
                record: k.form.clone(),
            };
            if best.is_some() {
                return Ok((best, Some(c)));
            }
            best = Some(c);
        }
        Ok((best, None))
    }

    /// Makes a placed record reachable by the records after it, as its upsert would have.
    async fn add(
        &mut self,
        matcher: &Matcher,
        conn: &mut AnyConnection,
        source: &str,
        n: &New<'_>,
        child: &str,
    ) -> Result<(), sqlx::Error> {
        let record = &n.stored.record;
        if !self.children.contains_key(child) {
            self.load_children(conn, vec![child.to_string()]).await?;
        }
        self.children
            .entry(child.to_string())
            .or_default()
            .push((source.to_string(), record.clone()));
        let at = self.known.len() as u32;
        let id = (source.to_string(), n.local_id.to_string());
        let first = self
            .at
            .get(&id)
            .map_or(at, |&a| self.glances[a as usize].record);
        let form = Record::from_form(n.local_id, &n.form);
        self.glances.push(Glance::of(first, &form, n.parts));
        self.known.push(Known {
            source: source.to_string(),
            local_id: n.local_id.to_string(),
            form,
            child: Some(child.to_string()),
        });
        self.at.insert(id, at);
        for (rule, key, _) in &n.keys {
            let r = self.rule(rule);
            self.by_key.entry((r, key.clone())).or_default().push(at);
        }
        for (kind, value) in n.stored.verified() {
            self.holders
                .entry((kind.to_string(), value.to_string()))
                .or_default()
                .insert(child.to_string());
        }
        for c in matcher.tf_comparisons() {
            let Some(v) = counted(c, record) else {
                continue;
            };
            let before = self.count(c, v).0;
            self.terms.entry((c, v.to_string())).or_default().0 = before + 1;
            let total = self.terms.entry((c, String::new())).or_default();
            total.0 += 1;
            total.1 += (before + 1) * (before + 1) - before * before;
        }
        Ok(())
    }
}

/// Writes the batch: children, records, links and proposals, blocking keys, identifiers,
/// name counts, and one audit entry per link and proposal.
async fn write(
    matcher: &Matcher,
    conn: &mut AnyConnection,
    staging: &mut Staging,
    source: &str,
    placed: &Placed<'_>,
    after: Option<&After>,
) -> Result<(), sqlx::Error> {
    let (new, placements) = (&placed.new, &placed.placements);
    let now = chrono::Utc::now().to_rfc3339();
    // Each table's rows are staged before the one before it is moved in: on PostgreSQL the
    // next COPY runs while the transaction moves the last one's rows.
    let children = staging.stage(
        "children (id, created_at)",
        placed
            .writes
            .created
            .iter()
            .map(|c| [Cell::from(c.as_str()), now.as_str().into()]),
    )?;
    let records = staging.stage(
        "source_records (source, local_id, child_id, identifiers, demographics, link_method, updated_at, restricted)",
        new.iter().zip(placements).map(|(n, p)| {
            [
                Cell::from(source),
                n.local_id.into(),
                p.child.as_str().into(),
                n.stored.identifiers.as_str().into(),
                n.stored.demographics.as_str().into(),
                p.method.as_str().into(),
                now.as_str().into(),
                Cell::Int(n.stored.restricted),
            ]
        }),
    )?;
    staging.apply(conn, children, "").await?;
    let version = matcher.model.version.as_str();
    let mut links = Vec::with_capacity(new.len() + new.len() / 8);
    // (index into links, the child the record is linked to meanwhile, for a proposal)
    let mut current: Vec<Option<&str>> = Vec::with_capacity(links.capacity());
    for (n, p) in new.iter().zip(placements) {
        links.push(NewLink::automatic(
            source,
            n.local_id,
            &p.child,
            &p.method,
            p.scored.as_ref(),
            version,
        ));
        current.push(None);
        for review in &p.review {
            links.push(NewLink::proposal(source, n.local_id, review, version));
            current.push(Some(&p.child));
        }
    }
    let link_rows = LinkRows::of(&links);
    let staged_links = staging.stage(NEW_LINKS, link_rows.rows(&links))?;
    staging.apply(conn, records, "").await?;
    let mut keys = Vec::with_capacity(new.iter().map(|n| n.keys.len()).sum());
    let mut identifiers = Vec::with_capacity(2 * new.len());
    for n in new {
        for (rule, key, split) in &n.keys {
            let part = Split::stored(*split, &n.form);
            keys.push((
                rule.as_str(),
                key.as_str(),
                part,
                n.local_id,
                n.form.as_str(),
            ));
        }
        for (kind, value) in n.stored.verified() {
            identifiers.push([
                Cell::from(kind),
                value.into(),
                source.into(),
                n.local_id.into(),
            ]);
        }
    }
    // In the primary key's order: the index then grows page by page rather than taking
    // each row at a random place, which is most of what writing the keys costs.
    keys.sort_unstable();
    let staged_keys = staging.stage(
        "match_keys (rule, key, part, source, local_id, form)",
        keys.iter().map(|&(rule, key, part, local_id, form)| {
            [
                Cell::from(rule),
                key.into(),
                part.into(),
                source.into(),
                local_id.into(),
                form.into(),
            ]
        }),
    )?;
    staging.apply(conn, staged_links, "").await?;
    let staged_identifiers = staging.stage(
        "record_identifiers (kind, value, source, local_id)",
        identifiers,
    )?;
    staging.apply(conn, staged_keys, "").await?;
    let terms = staging.stage(
        "match_terms (comparison, value, n, sq)",
        placed.writes.terms.iter().map(|(c, v, n, sq)| {
            [
                Cell::from(c.as_str()),
                v.as_str().into(),
                Cell::Int(*n),
                Cell::Int(*sq),
            ]
        }),
    )?;
    staging.apply(conn, staged_identifiers, "").await?;
    staging
        .apply(
            conn,
            terms,
            "ON CONFLICT (comparison, value) DO UPDATE SET n = match_terms.n + excluded.n, \
             sq = match_terms.sq + excluded.sq",
        )
        .await?;
    let ids = &link_rows.ids;
    let entries: Vec<Entry> = links
        .iter()
        .zip(ids)
        .zip(&current)
        .map(|((l, id), current)| l.entry(id, *current))
        .collect();
    // Waited for here, with every row written but before the audit chain's lock is taken:
    // the write waited for takes that lock itself.
    if let Some(after) = after {
        if !after.applied().await {
            return Err(sqlx::Error::Protocol(
                "the write these records belong to was not applied".into(),
            ));
        }
    }
    audit::chain_staged(conn, staging, &entries.iter().collect::<Vec<_>>()).await?;
    Ok(())
}

/// A record's verified national identifier of a kind, as the index looks it up.
fn national<'a>(r: &'a Record, kind: &str) -> Option<&'a str> {
    match kind {
        "nhs_number" => r.nhs_number.as_ref().map(|n| n.as_str()),
        "upn" => r.upn.as_ref().map(|u| u.as_str()),
        _ => None,
    }
}

/// A store error as it may be logged: a database's own message can quote the value it
/// refused (a duplicate key names the record), so only its code is kept.
fn logged(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => format!(
            "database error {}",
            d.code().as_deref().unwrap_or("without a code")
        ),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use weft_adapters::{Demographics, Identifier};
    use weft_ids::{NhsNumber, Upn};

    use super::*;
    use crate::foundation::config::MatchingConfig;
    use crate::foundation::store::test_count;
    use crate::pipeline::resolve::linkage::{
        decide, link_history, review_queue, Decision, AMBIGUOUS, CERTAIN, SECOND_RECORD,
    };

    async fn index(dir: &std::path::Path) -> (Index, weft_adapters::testkit::FreshDb) {
        let (store, db) = crate::foundation::store::test_store(dir).await;
        let cfg = MatchingConfig {
            upper: 0.95,
            lower: 0.5,
            model: None,
        };
        (
            Index::with_matcher(store, Matcher::from_config(&cfg).unwrap()),
            db,
        )
    }

    /// A valid NHS number in the never-issued 999 range, one per `n`.
    fn nhs(n: u32) -> String {
        (0..10)
            .map(|d| format!("999{:06}{d}", n * 7 + 1))
            .find(|s| NhsNumber::parse(s).is_ok())
            .unwrap_or_else(|| nhs(n + 100_000))
    }

    /// A valid permanent UPN, one per `n`.
    fn upn(n: u32) -> String {
        "ABCDEFGHJKLMNPQRTUVWXYZ"
            .chars()
            .map(|c| format!("{c}999{:09}", n))
            .find(|s| Upn::parse(s).is_ok())
            .unwrap()
    }

    fn rec(
        id: &str,
        ids: &[(&str, String)],
        given: &str,
        family: &str,
        dob: &str,
        sex: &str,
        postcode: Option<&str>,
    ) -> SourceRecord {
        SourceRecord {
            local_id: id.into(),
            identifiers: ids
                .iter()
                .map(|(k, v)| Identifier::new(*k, v.clone()))
                .collect(),
            demographics: Demographics {
                given_name: Some(given.into()),
                family_name: Some(family.into()),
                birth_date: Some(dob.into()),
                sex: Some(sex.into()),
                postcode: postcode.map(String::from),
                ..Demographics::default()
            },
            score: None,
            restricted: false,
        }
    }

    /// What the index decided, named without the random child ids: each child by the first of
    /// its records. Records and their links (status, method, probability), and name counts.
    async fn outcome(index: &Index) -> (BTreeSet<String>, BTreeSet<String>, Vec<String>) {
        let pool = &index.store().pool;
        let rows =
            sqlx::query("SELECT source, local_id, child_id, link_method FROM source_records")
                .fetch_all(pool)
                .await
                .unwrap();
        let mut label: BTreeMap<String, String> = BTreeMap::new();
        let mut records = Vec::new();
        for r in &rows {
            let (s, l, c, m): (String, String, String, String) = (
                r.get("source"),
                r.get("local_id"),
                r.get("child_id"),
                r.get("link_method"),
            );
            let name = format!("{s}/{l}");
            let e = label.entry(c.clone()).or_insert_with(|| name.clone());
            if name < *e {
                *e = name.clone();
            }
            records.push((name, c, m));
        }
        let records = records
            .into_iter()
            .map(|(name, c, m)| format!("{name} -> {} by {m}", label[&c]))
            .collect();
        let links = sqlx::query(
            "SELECT source, local_id, child_id, status, method, CAST(probability AS TEXT) AS p \
             FROM match_links",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let c: String = r.get("child_id");
            format!(
                "{}/{} {} {} {} {:?}",
                r.get::<String, _>("source"),
                r.get::<String, _>("local_id"),
                r.get::<String, _>("status"),
                r.get::<String, _>("method"),
                label.get(&c).cloned().unwrap_or(c),
                r.get::<Option<String>, _>("p")
                    .and_then(|p| p.parse::<f64>().ok())
                    .map(|p| format!("{p:.9}")),
            )
        })
        .collect();
        let terms = sqlx::query(
            "SELECT comparison, value, n, sq FROM match_terms WHERE n <> 0 AND comparison <> '_derived' \
             ORDER BY comparison, value",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.get::<String, _>("comparison"),
                r.get::<String, _>("value"),
                r.get::<i64, _>("n"),
                r.get::<i64, _>("sq")
            )
        })
        .collect();
        (records, links, terms)
    }

    /// The matcher's audit entries: outcome, record and method of each.
    async fn matcher_entries(index: &Index) -> Vec<audit::Recorded> {
        let q = audit::Query {
            user: Some("matcher".into()),
            limit: Some(100_000),
            ..Default::default()
        };
        audit::search(index.store(), &q, None).await.unwrap()
    }

    #[derive(Debug, Clone)]
    struct Person {
        given: &'static str,
        family: &'static str,
        dob: &'static str,
        female: bool,
        postcode: &'static str,
    }

    fn person() -> impl Strategy<Value = Person> {
        (
            prop::sample::select(vec!["Ruby", "Rosie", "Oliver", "Eleanor", "Amira", "Ella"]),
            prop::sample::select(vec!["Calder", "Khan", "Thompson"]),
            prop::sample::select(vec!["2016-06-21", "2016-06-12", "2015-01-02"]),
            any::<bool>(),
            prop::sample::select(vec!["WT3 5QP", "WT9 1AB"]),
        )
            .prop_map(|(given, family, dob, female, postcode)| Person {
                given,
                family,
                dob,
                female,
                postcode,
            })
    }

    /// One record of a person: which person, which source, how it is written, and whether it
    /// carries the source's national identifier (health the NHS number, school the UPN).
    type Pick = (usize, usize, u8, bool);

    /// The records, grouped by source in a fixed order of sources (the order both paths see).
    fn records(people: &[Person], picks: &[Pick]) -> Vec<(&'static str, Vec<SourceRecord>)> {
        let sources = ["health", "school", "police"];
        sources
            .iter()
            .enumerate()
            .map(|(s, source)| {
                let recs = picks
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.1 % 3 == s)
                    .map(|(i, &(who, _, how, with_id))| {
                        let p = &people[who % people.len()];
                        let who = (who % people.len()) as u32;
                        let ids = match (*source, with_id) {
                            ("health", true) => vec![("nhs_number", nhs(who))],
                            ("school", true) => vec![("upn", upn(who))],
                            _ => vec![],
                        };
                        let given = match how % 4 {
                            1 => p.given[..p.given.len() - 1].to_string(),
                            3 => p.given[..1].to_string(),
                            _ => p.given.to_string(),
                        };
                        let sex = if p.female { "female" } else { "male" };
                        let postcode = (how % 4 != 2).then_some(p.postcode);
                        rec(
                            &format!("{i}"),
                            &ids,
                            &given,
                            p.family,
                            p.dob,
                            sex,
                            postcode,
                        )
                    })
                    .collect();
                (*source, recs)
            })
            .collect()
    }

    async fn same_children(people: Vec<Person>, picks: Vec<Pick>, bulk_from: usize, batch: usize) {
        let dir = tempfile::tempdir().unwrap();
        let (one, _a) = index(dir.path()).await;
        let (many, _b) = index(dir.path()).await;
        let sources = records(&people, &picks);
        // As a pass gives them: each record with the records of other sources it is certain
        // with.
        let listed: Vec<(&str, &[SourceRecord])> =
            sources.iter().map(|(s, r)| (*s, r.as_slice())).collect();
        let partners = Partners::of_pass(one.matcher(), listed);
        for (source, recs) in &sources {
            for r in recs {
                one.upsert_with(source, r, &partners).await.unwrap();
            }
        }
        let mut bulk = 0;
        for (source, recs) in &sources {
            let done = many
                .upsert_many_of_pass_with(source, recs, bulk_from, batch, &partners)
                .await;
            assert_eq!((done.failed, done.records), (0, recs.len()));
            bulk += done.bulk;
        }
        assert_eq!(outcome(&one).await, outcome(&many).await);
        let said = |e: &[audit::Recorded]| {
            let mut v: Vec<String> = e
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r.entry.outcome, r.entry.detail["local_id"], r.entry.detail["method"]
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            said(&matcher_entries(&one).await),
            said(&matcher_entries(&many).await)
        );
        assert!(bulk > 0 || picks.len() < bulk_from);
        let verified = audit::verify(many.store()).await.unwrap();
        assert_eq!(verified.problem, None);
    }

    /// The walk's glance at two records' identifiers gives `identifiers_conflict`'s answer
    /// whenever it gives one, in every arrangement of absent, equal and different NHS numbers
    /// and UPNs.
    #[test]
    fn a_glance_settles_a_conflict_only_as_the_identifiers_do() {
        let form = |n: u8, u: u8| Record {
            nhs_number: (n > 0).then(|| NhsNumber::parse(&nhs(u32::from(n))).unwrap()),
            upn: (u > 0).then(|| Upn::parse(&upn(u32::from(u))).unwrap()),
            ..Record::default()
        };
        let mut settled = 0;
        for (an, au, bn, bu) in
            (0..27u8).flat_map(|i| (0..3u8).map(move |j| (i / 9, i / 3 % 3, i % 3, j)))
        {
            let (a, b) = (form(an, au), form(bn, bu));
            let g = Glance::of(0, &b, Parts::default());
            let hashes = (
                glance_hash(a.nhs_number.as_ref()),
                glance_hash(a.upn.as_ref()),
            );
            let exact = identifiers_conflict(&a, &b);
            if let Some(c) = g.conflict(hashes.0, hashes.1) {
                assert_eq!(c, exact, "nhs {an}/{bn}, upn {au}/{bu}");
                settled += 1;
            }
        }
        // Only where both hold an equal identifier and no other kind differs is it left open.
        assert_eq!(settled, 81 - 24);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

        /// The bulk path places records exactly as upserting them one by one would: the same
        /// children, links, proposals, scores and name counts, and the same audit entries,
        /// each record with the same partners.
        #[test]
        fn bulk_and_incremental_make_the_same_children(
            people in prop::collection::vec(person(), 2..8),
            picks in prop::collection::vec((0usize..8, 0usize..3, 0u8..4, any::<bool>()), 10..40),
            batch in 3usize..20,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(same_children(people, picks, 2, batch));
        }
    }

    fn eleanor(id: &str, ids: &[(&str, String)], given: &str, family: &str) -> SourceRecord {
        rec(
            id,
            ids,
            given,
            family,
            "2016-06-21",
            "female",
            Some("WT3 5QP"),
        )
    }

    /// Strangers to fill a batch past the threshold.
    fn strangers(from: usize, n: usize) -> Vec<SourceRecord> {
        let given = ["Amir", "Noah", "Leo", "Mia", "Ravi", "Sara", "Jo", "Ava"];
        (from..from + n)
            .map(|i| {
                rec(
                    &format!("f{i}"),
                    &[],
                    given[i % given.len()],
                    &format!("Family{i}"),
                    &format!("20{:02}-0{}-1{}", 10 + i % 9, 1 + i % 9, i % 10),
                    if i % 2 == 0 { "female" } else { "male" },
                    Some("WT1 1AA"),
                )
            })
            .collect()
    }

    /// A batch uses the world the call's previous batch left, or its own records placed
    /// ahead in that world while the previous batch was written, only while nothing else
    /// changed the index: a record placed by another writer in between is read and found (a
    /// kept world, or a placement made before it, would miss it), and when nothing changed
    /// the kept world is what places the batch (rows removed behind the epoch's back are
    /// still found in it).
    #[tokio::test]
    async fn a_batch_keeps_the_previous_batchs_world_only_while_nobody_else_changed_the_index() {
        for placed_ahead in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (index, _db) = index(dir.path()).await;
            let eleanor = |id: &str| {
                rec(
                    id,
                    &[],
                    "Eleanor",
                    "Hartley",
                    "2015-03-04",
                    "female",
                    Some("LS1 4AB"),
                )
            };
            let child_of = |local_id: &'static str| {
                let pool = index.store().pool.clone();
                async move {
                    sqlx::query("SELECT child_id FROM source_records WHERE local_id = $1")
                        .bind(local_id)
                        .fetch_one(&pool)
                        .await
                        .unwrap()
                        .try_get::<String, _>("child_id")
                        .unwrap()
                }
            };
            let batch = |first: SourceRecord, from: usize| {
                let mut b = vec![first];
                b.extend(strangers(from, 5));
                b
            };
            let batches = [
                strangers(0, 5),
                batch(eleanor("s1"), 10),
                batch(eleanor("s2"), 20),
            ];
            let next = |i: usize| {
                batches
                    .get(i + 1)
                    .map(Vec::as_slice)
                    .filter(|_| placed_ahead)
            };
            let census = Call {
                source: "census",
                bulk_from: 1,
                after: None,
                partners: &Partners::default(),
            };
            let mut left = Left::Nothing;
            let mut done = Upserted::default();
            // A first batch: the index was empty, so its world is the whole index and is
            // kept, or the next batch is placed in it.
            index
                .bulk_batch(&census, &batches[0], next(0), &mut left, &mut done)
                .await
                .unwrap();
            assert!(match left {
                Left::World(_) => !placed_ahead,
                Left::Ahead(_) => placed_ahead,
                Left::Nothing => false,
            });
            // Another writer places a record between the batches: the next batch reads again.
            index.upsert("police", &eleanor("p1")).await.unwrap();
            index
                .bulk_batch(&census, &batches[1], next(1), &mut left, &mut done)
                .await
                .unwrap();
            assert_eq!(child_of("s1").await, child_of("p1").await);
            // Nobody else writes now: the next batch is placed in the kept world, which still
            // holds the blocking keys removed here without moving the epoch.
            assert!(match left {
                Left::World(_) => !placed_ahead,
                Left::Ahead(_) => placed_ahead,
                Left::Nothing => false,
            });
            sqlx::query("DELETE FROM match_keys")
                .execute(&index.store().pool)
                .await
                .unwrap();
            index
                .bulk_batch(&census, &batches[2], next(2), &mut left, &mut done)
                .await
                .unwrap();
            assert_eq!(child_of("s2").await, child_of("p1").await);
            assert_eq!(done.bulk, 17);
        }
    }

    /// A batch placed ahead counts the previous batch's records as the index will hold them
    /// once it commits: the same record again is unchanged, and a changed one is left for
    /// the incremental path, as they would be had the batch been sorted after that commit.
    #[tokio::test]
    async fn a_batch_placed_ahead_sees_the_records_of_the_batch_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path()).await;
        let first = strangers(0, 6);
        let mut changed = first[1].clone();
        changed.demographics.postcode = Some("YO1 7HH".into());
        let second = vec![first[0].clone(), changed];
        let census = Call {
            source: "census",
            bulk_from: 1,
            after: None,
            partners: &Partners::default(),
        };
        let mut left = Left::Nothing;
        let mut done = Upserted::default();
        index
            .bulk_batch(&census, &first, Some(&second), &mut left, &mut done)
            .await
            .unwrap();
        let Left::Ahead(Ahead { placed, .. }) = &left else {
            panic!("the second batch was not placed ahead");
        };
        assert_eq!(placed.later, vec![1]);
        assert!(placed.new.is_empty());
        assert_eq!((placed.counted.records, placed.counted.unchanged), (1, 1));
        let later = index
            .bulk_batch(&census, &second, None, &mut left, &mut done)
            .await
            .unwrap();
        assert_eq!(later, vec![1]);
        assert_eq!((done.bulk, done.unchanged), (6, 1));
    }

    /// A UPN held by a child whose records carry another verified NHS number than the new
    /// record's: one number is wrong somewhere, and the NHS number says which child the record
    /// is. The record is not linked by the UPN (it starts a child of its own here) and the
    /// UPN's child is proposed for a person, on either path.
    #[tokio::test]
    async fn a_upn_never_links_a_record_to_a_child_with_another_nhs_number() {
        let mut health = rec(
            "h1",
            &[("nhs_number", nhs(1)), ("upn", upn(1))],
            "Amelia",
            "Wright",
            "2016-03-27",
            "female",
            Some("WT7 8RN"),
        );
        health.demographics.address_lines = vec!["34 Victoria Road".into()];
        let mut social = rec(
            "c1",
            &[("nhs_number", nhs(2)), ("upn", upn(1))],
            "Amelia",
            "Wright",
            "2016-03-27",
            "female",
            Some("WT19 7EP"),
        );
        social.demographics.address_lines = vec!["10 Chestnut Grove".into()];
        for bulk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (index, _db) = index(dir.path()).await;
            let (first, _) = index.upsert("health", &health).await.unwrap();
            let second = if bulk {
                let done = index
                    .upsert_many_with("social_care", std::slice::from_ref(&social), 1, 10)
                    .await;
                assert_eq!((done.bulk, done.failed), (1, 0));
                let links = index.links(&first).await.unwrap().unwrap_or_default();
                assert_eq!(links.len(), 1, "bulk: the UPN linked it");
                String::new()
            } else {
                index.upsert("social_care", &social).await.unwrap().0
            };
            assert_ne!(second, first, "bulk: {bulk}");
            let queue = review_queue(&index).await.unwrap();
            assert_eq!(queue.len(), 1, "bulk: {bulk}: {queue:?}");
            assert_eq!(
                (
                    queue[0].local_id.as_str(),
                    queue[0].child_id.as_str(),
                    queue[0].method.as_str()
                ),
                ("c1", first.as_str(), "identifier:upn"),
                "bulk: {bulk}"
            );
        }
    }

    /// The child a record's active link holds it in.
    /// The audit entry a test's decision is recorded with.
    fn by(d: &crate::pipeline::resolve::linkage::Decided) -> Entry {
        Entry::system(
            "match_decision",
            Some(&d.child_id),
            "changed",
            serde_json::json!({}),
        )
    }

    /// Places one record, through the bulk path when `bulk` (as one batch of a pass).
    async fn place_one(index: &Index, source: &str, r: &SourceRecord, bulk: bool) {
        if bulk {
            let done = index
                .upsert_many_with(source, std::slice::from_ref(r), 1, 10)
                .await;
            assert_eq!((done.bulk, done.failed), (1, 0));
        } else {
            index.upsert(source, r).await.unwrap();
        }
    }

    async fn active_child(index: &Index, source: &str, local_id: &str) -> String {
        sqlx::query_scalar(
            "SELECT child_id FROM match_links WHERE source = $1 AND local_id = $2 \
             AND status = 'active'",
        )
        .bind(source)
        .bind(local_id)
        .fetch_one(&index.store().pool)
        .await
        .unwrap()
    }

    /// Two boys of one name born on one day, at two addresses: health holds one with his NHS
    /// number; its second record, without one, scores high against him (nothing compared
    /// tells the two apart) but short of certain, so it waits for a person, on either path,
    /// as a proposal saying why. The school's record of the second boy then joins *his* child,
    /// and a copy of the first boy's record at his own address, certain, still joins him.
    #[tokio::test]
    async fn a_second_record_from_a_source_joins_a_child_only_when_certain() {
        let boy = |id: &str, ids: &[(&str, String)], postcode: &str, line: &str| {
            let mut r = rec(
                id,
                ids,
                "Oliver",
                "Watson",
                "2015-10-10",
                "male",
                Some(postcode),
            );
            r.demographics.address_lines = vec![line.into()];
            r
        };
        let first = boy(
            "h1",
            &[("nhs_number", nhs(1))],
            "WT7 8RN",
            "34 Victoria Road",
        );
        let namesake = boy("h2", &[], "WT19 7EP", "10 Chestnut Grove");
        let school = boy("s2", &[], "WT19 7EP", "10 Chestnut Grove");
        let copy = boy("h3", &[], "WT7 8RN", "34 Victoria Road");
        for bulk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (index, _db) = index(dir.path()).await;
            let (him, _) = index.upsert("health", &first).await.unwrap();
            let place = |source, r| place_one(&index, source, r, bulk);
            place("health", &namesake).await;
            let queue = review_queue(&index).await.unwrap();
            assert_eq!(queue.len(), 1, "bulk: {bulk}: {queue:?}");
            let p = queue[0].probability.unwrap();
            assert!((0.95..CERTAIN).contains(&p), "bulk: {bulk}: {p}");
            assert_eq!(
                (queue[0].local_id.as_str(), queue[0].child_id.as_str()),
                ("h2", him.as_str()),
                "bulk: {bulk}"
            );
            assert_eq!(queue[0].method, SECOND_RECORD, "bulk: {bulk}");
            place("school", &school).await;
            place("health", &copy).await;
            let mut held: Vec<(String, String)> = index
                .links(&him)
                .await
                .unwrap()
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l.source, l.local_id))
                .collect();
            held.sort();
            assert_eq!(
                held,
                [
                    ("health".into(), "h1".into()),
                    ("health".into(), "h3".into())
                ],
                "bulk: {bulk}"
            );
            let theirs = active_child(&index, "school", "s2").await;
            assert_eq!(theirs, active_child(&index, "health", "h2").await);
            assert_ne!(theirs, him, "bulk: {bulk}");
        }
    }

    /// Two girls of one name born on one day, each known to health by her NHS number at her
    /// own address. Police record one of them with no identifier and no postcode: it matches
    /// both girls alike, so it joins neither, on either path, and waits for a person as a new
    /// child proposed for both girls, saying why. The person confirms one: the other proposal
    /// ends with it. A police record carrying one girl's postcode is hers.
    #[tokio::test]
    async fn a_record_matching_two_children_alike_joins_neither() {
        // The police record's child, with nothing left in the review queue.
        async fn settled(index: &Index, local_id: &str) -> String {
            assert!(review_queue(index).await.unwrap().is_empty());
            active_child(index, "police", local_id).await
        }
        let girl = |id: &str, ids: &[(&str, String)], postcode: Option<&str>, line: &str| {
            let mut r = rec(id, ids, "Olivia", "Wood", "2010-08-08", "female", postcode);
            r.demographics.address_lines = vec![line.into()];
            r
        };
        let first = girl(
            "h1",
            &[("nhs_number", nhs(1))],
            Some("WD3 1AA"),
            "4 Mill Lane",
        );
        let other = girl(
            "h2",
            &[("nhs_number", nhs(2))],
            Some("WD9 7QT"),
            "21 Oak Avenue",
        );
        let unplaced = girl("p1", &[], None, "38 New Road");
        let placed = girl("p2", &[], Some("WD9 7QT"), "21 Oak Avenue");
        for bulk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (index, _db) = index(dir.path()).await;
            let (her, _) = index.upsert("health", &first).await.unwrap();
            let (them, _) = index.upsert("health", &other).await.unwrap();
            assert_ne!(her, them);
            let place = |r| place_one(&index, "police", r, bulk);
            place(&unplaced).await;
            let alone = active_child(&index, "police", "p1").await;
            assert!(![&her, &them].contains(&&alone), "bulk: {bulk}");
            let queue = review_queue(&index).await.unwrap();
            let mut proposed: Vec<(&str, &str, &str)> = queue
                .iter()
                .map(|l| (l.local_id.as_str(), l.method.as_str(), l.child_id.as_str()))
                .collect();
            proposed.sort();
            let mut both = [
                ("p1", AMBIGUOUS, her.as_str()),
                ("p1", AMBIGUOUS, them.as_str()),
            ];
            both.sort();
            assert_eq!(proposed, both, "bulk: {bulk}");
            let hers = queue.iter().find(|l| l.child_id == her).unwrap();
            decide(&index, &hers.id, Decision::Confirm, "admin1", None, by)
                .await
                .unwrap();
            assert_eq!(settled(&index, "p1").await, her, "bulk: {bulk}");
            let ended = link_history(&index, &them)
                .await
                .unwrap()
                .unwrap_or_default();
            assert!(
                ended
                    .iter()
                    .any(|l| l.local_id == "p1" && l.status == "superseded"),
                "bulk: {bulk}: {ended:?}"
            );
            place(&placed).await;
            assert_eq!(settled(&index, "p2").await, them, "bulk: {bulk}");
        }
    }

    /// A girl's stale record at health (from before a move and her mother's remarriage, with a
    /// slip in her name, joined to her by her NHS number) is confidently not the school's record
    /// of her today: the health record of today bridges the two only through the former family
    /// name it keeps. That must not keep the school's record out of her child, on the
    /// incremental path or the bulk one; her twin brother at the new address stays apart. The
    /// index holds 2,000 other children first, so that the prior is a real index's.
    #[tokio::test]
    async fn a_stale_record_of_the_child_does_not_keep_her_current_records_out() {
        let nhs = [("nhs_number", "9434765919".to_string())];
        let lines = |r: &mut SourceRecord, line: &str| {
            r.demographics.address_lines = vec![line.into()];
            r.demographics.middle_names = Some("Rose".into());
        };
        let mut old = rec(
            "h1",
            &nhs,
            "Tlaia",
            "Williams",
            "2016-06-21",
            "female",
            Some("WT17 7DG"),
        );
        lines(&mut old, "15 Chestnut Grove");
        let mut now = rec(
            "h2",
            &nhs,
            "Talia",
            "White",
            "2016-06-21",
            "female",
            Some("WT20 7LX"),
        );
        lines(&mut now, "11 York Road");
        now.demographics.former_family_names = vec!["Williams".into()];
        let mut school = rec(
            "s1",
            &[],
            "Talia",
            "White",
            "2016-06-21",
            "female",
            Some("WT20 7LX"),
        );
        school.demographics.address_lines = vec!["11 York Road".into()];
        let mut brother = rec(
            "s2",
            &[],
            "Tom",
            "White",
            "2016-06-21",
            "male",
            Some("WT20 7LX"),
        );
        brother.demographics.address_lines = vec!["11 York Road".into()];
        for bulk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (index, _db) = index(dir.path()).await;
            let others: Vec<SourceRecord> = (0..2000u32)
                .map(|i| {
                    let given = ["Amir", "Noah", "Leo", "Mia", "Ravi", "Sara", "Jo", "Ava"];
                    let letter = char::from(b'A' + (i / 100 % 26) as u8);
                    rec(
                        &format!("c{i}"),
                        &[],
                        given[i as usize % given.len()],
                        &format!("Family{i}"),
                        &format!(
                            "20{:02}-{:02}-{:02}",
                            5 + i % 13,
                            1 + i / 13 % 12,
                            1 + i / 156 % 28
                        ),
                        if i % 2 == 0 { "female" } else { "male" },
                        Some(&format!("WT{} {}A{letter}", 1 + i % 20, i % 10)),
                    )
                })
                .collect();
            let done = index.upsert_many_with("census", &others, 1, 1000).await;
            assert_eq!(done.failed, 0);
            let (talia, _) = index.upsert("health", &old).await.unwrap();
            let (again, _) = index.upsert("health", &now).await.unwrap();
            assert_eq!(again, talia, "one NHS number, one child");
            if bulk {
                let done = index
                    .upsert_many_with("school", &[school.clone(), brother.clone()], 1, 10)
                    .await;
                assert_eq!((done.bulk, done.failed), (2, 0));
            } else {
                index.upsert("school", &school).await.unwrap();
                index.upsert("school", &brother).await.unwrap();
            }
            let links = index.links(&talia).await.unwrap().unwrap_or_default();
            let mut held: Vec<(&str, &str)> = links
                .iter()
                .map(|l| (l.source.as_str(), l.local_id.as_str()))
                .collect();
            held.sort_unstable();
            assert_eq!(
                held,
                [("health", "h1"), ("health", "h2"), ("school", "s1")],
                "bulk: {bulk}"
            );
        }
    }

    /// Pupils named Zed born in 2016, none of them near Katie's or Catie's birthday and none
    /// with a given name starting C or K: a crowd in the family-soundex-and-birth-year block.
    fn crowd(n: usize) -> Vec<SourceRecord> {
        let starts = [
            "Ab", "Bo", "Da", "El", "Fa", "Ga", "Ha", "Jo", "Lu", "Ma", "Ne", "Ol", "Pa", "Ro",
            "Sa", "Ta",
        ];
        let ends = ["la", "ri", "no", "sa", "ve", "to", "mi", "ka", "du", "be"];
        (0..n)
            .map(|i| {
                rec(
                    &format!("z{i}"),
                    &[],
                    &format!("{}{}", starts[i % starts.len()], ends[i / starts.len()]),
                    "Zed",
                    &format!("2016-{:02}-{:02}", 1 + i % 12, 1 + i / 12),
                    if i % 2 == 0 { "female" } else { "male" },
                    None,
                )
            })
            .collect()
    }

    /// A block grown past [`SPLIT_OVER`] records is split by the given initial, the same way
    /// on both paths: Catie (born nine days after Katie, sharing only that block with her) is
    /// linked or proposed to Katie's child while the crowd is small, and never compared with
    /// her once it is large.
    #[tokio::test]
    async fn a_large_block_is_split_the_same_way_on_both_paths() {
        for (n, reached) in [(10, true), (SPLIT_OVER + 10, false)] {
            let dir = tempfile::tempdir().unwrap();
            let (one, _a) = index(dir.path()).await;
            let (many, _b) = index(dir.path()).await;
            let mut recs = vec![rec(
                "katie",
                &[],
                "Katie",
                "Zed",
                "2016-06-21",
                "female",
                None,
            )];
            recs.extend(crowd(n));
            recs.push(rec(
                "catie",
                &[],
                "Catie",
                "Zed",
                "2016-06-12",
                "female",
                None,
            ));
            for r in &recs {
                one.upsert("school", r).await.unwrap();
            }
            let done = many.upsert_many_with("school", &recs, 2, 40).await;
            assert_eq!((done.failed, done.bulk), (0, recs.len()));
            assert_eq!(
                outcome(&one).await,
                outcome(&many).await,
                "{n} in the crowd"
            );
            for index in [&one, &many] {
                let links: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM match_links ml JOIN source_records k \
                     ON k.child_id = ml.child_id WHERE ml.local_id = $1 AND k.local_id = $2",
                )
                .bind("catie")
                .bind("katie")
                .fetch_one(&index.store().pool)
                .await
                .unwrap()
                .get("n");
                assert_eq!(links > 0, reached, "{n} in the crowd");
            }
        }
    }

    #[tokio::test]
    async fn a_bulk_import_keeps_what_a_person_decided() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path()).await;
        let a = index
            .upsert(
                "health",
                &eleanor("h1", &[("nhs_number", nhs(1))], "Eleanor", "Thompson"),
            )
            .await
            .unwrap()
            .0;
        // A near miss (only an initial: proposed) and a misspelling (linked), among strangers.
        let mut school = vec![
            eleanor("s1", &[], "E", "Thompson"),
            eleanor("s2", &[], "Eleanor", "Thomson"),
        ];
        school.extend(strangers(0, 6));
        let done = index.upsert_many_with("school", &school, 3, 100).await;
        assert_eq!((done.bulk, done.failed), (8, 0));
        let child_of = |id: &'static str| {
            let index = &index;
            async move {
                index
                    .find(&crate::pipeline::resolve::Search {
                        local_id: Some(("school".into(), id.into())),
                        ..Default::default()
                    })
                    .await
                    .unwrap()[0]
                    .id
                    .clone()
            }
        };
        assert_eq!(child_of("s2").await, a, "linked by the bulk path");
        assert_ne!(child_of("s1").await, a, "a near miss is only proposed");
        let queue = review_queue(&index).await.unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(
            (queue[0].local_id.as_str(), queue[0].child_id.as_str()),
            ("s1", a.as_str())
        );

        // A data administrator confirms the proposal and splits the automatic link.
        decide(&index, &queue[0].id, Decision::Confirm, "admin1", None, by)
            .await
            .unwrap();
        let link = link_history(&index, &a)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .find(|l| l.local_id == "s2" && l.status == "active")
            .unwrap();
        let split = decide(
            &index,
            &link.id,
            Decision::Split,
            "admin1",
            Some("twin"),
            by,
        )
        .await
        .unwrap()
        .child_id;
        assert_eq!(child_of("s1").await, a);
        assert_ne!(split, a);

        // The same import again, then one where both records changed, with new records
        // enough for the bulk path: nothing a person decided moves or is asked again.
        let again = index.upsert_many_with("school", &school, 3, 100).await;
        assert_eq!((again.unchanged, again.bulk), (8, 0));
        let mut changed = school.clone();
        changed[0].demographics.postcode = Some("WT3 5QQ".into());
        changed[1].demographics.given_name = Some("Eleanor".into());
        changed[1].demographics.postcode = Some("WT3 5QQ".into());
        changed.extend(strangers(6, 5));
        let done = index.upsert_many_with("school", &changed, 3, 100).await;
        assert_eq!((done.bulk, done.incremental, done.unchanged), (5, 2, 6));
        assert_eq!(child_of("s1").await, a, "the confirmed link stays");
        assert_eq!(child_of("s2").await, split, "the split stays");
        assert!(
            review_queue(&index).await.unwrap().is_empty(),
            "a split pairing is never proposed again"
        );
    }

    /// A call beside the write its records belong to commits nothing before that write has,
    /// and nothing at all when it fails — neither its batches nor the records it upserts one
    /// at a time.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_call_after_a_write_commits_only_once_that_write_has() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path()).await;
        let held = || async {
            sqlx::query("SELECT COUNT(*) AS n FROM source_records")
                .fetch_one(&index.store().pool)
                .await
                .unwrap()
                .get::<i64, _>("n")
        };
        for (committed, from) in [(false, 0), (true, 100)] {
            let (applied, after) = After::channel();
            // Twelve records: one batch of ten through the bulk path, two upserted alone.
            let recs = strangers(from, 12);
            let none = Partners::default();
            let (done, ()) = tokio::join!(
                index.upsert_many_in("police", &recs, 3, 10, Some(&after), &none),
                async {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    let before = held().await;
                    applied.send(committed);
                    assert_eq!(before, 0, "nothing committed while the write is pending");
                }
            );
            if committed {
                assert_eq!((done.bulk, done.incremental, done.failed), (10, 2, 0));
                assert_eq!(held().await, 12);
            } else {
                assert_eq!((done.records, done.failed), (0, 12));
                assert_eq!(held().await, 0);
            }
        }
        // Dropped unsent, the write counts as failed.
        let (applied, after) = After::channel();
        drop(applied);
        let done = index
            .upsert_many_in(
                "police",
                &strangers(200, 12),
                3,
                10,
                Some(&after),
                &Partners::default(),
            )
            .await;
        assert_eq!((done.records, done.failed), (0, 12));
        assert_eq!(held().await, 12);
        assert_eq!(audit::verify(index.store()).await.unwrap().problem, None);
    }

    #[tokio::test]
    async fn every_bulk_link_and_proposal_is_one_audit_entry_and_a_failed_audit_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path()).await;
        index
            .upsert(
                "health",
                &eleanor("h1", &[("nhs_number", nhs(1))], "Eleanor", "Thompson"),
            )
            .await
            .unwrap();
        let mut school = vec![
            eleanor("s1", &[], "E", "Thompson"),
            eleanor("s2", &[("nhs_number", nhs(1))], "Nell", "Smith"),
            eleanor("s3", &[], "Eleanor", "Thomson"),
        ];
        school.extend(strangers(0, 20));
        let done = index.upsert_many_with("school", &school, 3, 10).await;
        assert_eq!((done.bulk, done.failed), (23, 0));
        let links =
            sqlx::query("SELECT id, method, status FROM match_links WHERE source = 'school'")
                .fetch_all(&index.store().pool)
                .await
                .unwrap();
        assert_eq!(links.len(), 24, "23 links and one proposal");
        let entries = matcher_entries(&index).await;
        for l in &links {
            let id: String = l.get("id");
            let named: Vec<_> = entries
                .iter()
                .filter(|e| e.entry.detail["link"] == id.as_str())
                .collect();
            assert_eq!(named.len(), 1, "one entry for link {id}");
            let status: String = l.get("status");
            let outcome = if status == "review" {
                "proposed"
            } else {
                "linked"
            };
            assert_eq!(named[0].entry.outcome, outcome);
            assert_eq!(
                named[0].entry.detail["method"],
                l.get::<String, _>("method").as_str()
            );
        }
        assert_eq!(audit::verify(index.store()).await.unwrap().problem, None);

        // Fail closed: with the audit log unwritable, a bulk import changes nothing.
        let tables = [
            "children",
            "source_records",
            "match_links",
            "match_keys",
            "record_identifiers",
        ];
        let mut before = Vec::new();
        for t in tables {
            before.push(test_count(index.store(), t).await);
        }
        sqlx::query("DROP TABLE audit_head")
            .execute(&index.store().pool)
            .await
            .unwrap();
        let done = index
            .upsert_many_with("police", &strangers(100, 12), 3, 100)
            .await;
        assert_eq!((done.failed, done.records), (12, 0));
        let mut after = Vec::new();
        for t in tables {
            after.push(test_count(index.store(), t).await);
        }
        assert_eq!(before, after, "nothing half-applied");
    }
}
