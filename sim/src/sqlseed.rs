//! The reporting databases of the social care case system and the school MIS, created and filled
//! from a population on SQLite, PostgreSQL or MariaDB/MySQL.
//!
//! The DDL sticks to what all three accept (VARCHAR, TEXT, DATE, INTEGER), so the same tables
//! can be read through the `sql` adapter whichever backend a test or the demo picks. Seeding is
//! idempotent: tables are dropped and recreated, so a rerun never mixes two populations.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use chrono::NaiveDate;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use weft_adapters::sql::Driver;

use crate::population::Population;

/// A SQLite URL for a file, created on first connection.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A value to bind; dates stay dates so each backend stores its own DATE type.
enum Val {
    Text(Option<String>),
    Date(Option<NaiveDate>),
    Int(i32),
}

fn text(s: impl Into<String>) -> Val {
    Val::Text(Some(s.into()))
}

fn opt_text(s: Option<&String>) -> Val {
    Val::Text(s.cloned())
}

struct Table {
    name: &'static str,
    /// Column definitions, in insert order.
    columns: &'static [(&'static str, &'static str)],
    /// Indexed column, for lookups by the source's local id.
    index: Option<&'static str>,
    rows: Vec<Vec<Val>>,
}

impl Table {
    fn create(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect();
        format!("CREATE TABLE {} ({})", self.name, cols.join(", "))
    }

    fn insert(&self, rows: usize, driver: Driver) -> String {
        let width = self.columns.len();
        let mut n = 0;
        let tuples: Vec<String> = (0..rows)
            .map(|_| {
                let ps: Vec<String> = (0..width)
                    .map(|_| {
                        n += 1;
                        match driver {
                            Driver::Postgres => format!("${n}"),
                            Driver::Sqlite | Driver::MySql => "?".to_string(),
                        }
                    })
                    .collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.name,
            names.join(", "),
            tuples.join(", ")
        )
    }
}

/// Parameters per INSERT statement, under SQLite's historical limit of 999.
const MAX_PARAMS: usize = 900;

/// Creates (or recreates) the social care reporting tables and fills them from `pop`.
pub async fn seed_social_care(url: &str, pop: &Population) -> anyhow::Result<()> {
    load(url, &social_care_tables(pop))
        .await
        .context("seeding the social care database")
}

/// Creates (or recreates) the school MIS reporting tables and fills them from `pop`.
pub async fn seed_education(url: &str, pop: &Population) -> anyhow::Result<()> {
    load(url, &education_tables(pop))
        .await
        .context("seeding the school MIS database")
}

fn social_care_tables(pop: &Population) -> Vec<Table> {
    let mut persons = vec![];
    let mut episodes = vec![];
    let mut allocations = vec![];
    let mut notes = vec![];
    for r in pop.social_care_records() {
        let i = &r.identity;
        persons.push(vec![
            text(&i.local_id),
            opt_text(i.nhs_number.as_ref()),
            opt_text(i.upn.as_ref()),
            text(&i.given_name),
            text(&i.family_name),
            Val::Date(Some(i.birth_date)),
            text(i.sex.as_str()),
            text(&i.address.postcode),
            text(&i.address.line),
            text(&i.address.town),
        ]);
        for e in &r.episodes {
            episodes.push(vec![
                Val::Int(episodes.len() as i32 + 1),
                text(&i.local_id),
                text(e.kind.as_str()),
                Val::Date(Some(e.start_date)),
                Val::Date(e.end_date),
                text(&e.category),
            ]);
        }
        if let Some(a) = &r.allocation {
            allocations.push(vec![
                text(&i.local_id),
                text(&a.worker),
                text(&a.team),
                text(&a.phone),
            ]);
        }
        for n in &r.case_notes {
            notes.push(vec![
                Val::Int(notes.len() as i32 + 1),
                text(&i.local_id),
                Val::Date(Some(n.noted_on)),
                text(&n.note),
            ]);
        }
    }
    vec![
        Table {
            name: "persons",
            columns: &[
                ("person_id", "VARCHAR(32) NOT NULL PRIMARY KEY"),
                ("nhs_number", "VARCHAR(16)"),
                ("upn", "VARCHAR(16)"),
                ("given_name", "VARCHAR(100) NOT NULL"),
                ("family_name", "VARCHAR(100) NOT NULL"),
                ("birth_date", "DATE NOT NULL"),
                ("sex", "VARCHAR(16)"),
                ("postcode", "VARCHAR(10)"),
                ("address_line", "VARCHAR(200)"),
                ("town", "VARCHAR(100)"),
            ],
            index: None,
            rows: persons,
        },
        Table {
            name: "episodes",
            columns: &[
                ("episode_id", "INTEGER NOT NULL PRIMARY KEY"),
                ("person_id", "VARCHAR(32) NOT NULL"),
                ("kind", "VARCHAR(32) NOT NULL"),
                ("start_date", "DATE NOT NULL"),
                ("end_date", "DATE"),
                ("category", "VARCHAR(100)"),
            ],
            index: Some("person_id"),
            rows: episodes,
        },
        Table {
            name: "allocations",
            columns: &[
                ("person_id", "VARCHAR(32) NOT NULL PRIMARY KEY"),
                ("worker", "VARCHAR(100) NOT NULL"),
                ("team", "VARCHAR(100)"),
                ("phone", "VARCHAR(32)"),
            ],
            index: None,
            rows: allocations,
        },
        Table {
            name: "case_notes",
            columns: &[
                ("note_id", "INTEGER NOT NULL PRIMARY KEY"),
                ("person_id", "VARCHAR(32) NOT NULL"),
                ("noted_on", "DATE NOT NULL"),
                ("note", "TEXT NOT NULL"),
            ],
            index: Some("person_id"),
            rows: notes,
        },
    ]
}

fn education_tables(pop: &Population) -> Vec<Table> {
    let mut pupils = vec![];
    let mut attendance = vec![];
    let mut exclusions = vec![];
    for r in pop.school_records() {
        let i = &r.identity;
        pupils.push(vec![
            text(&i.local_id),
            opt_text(i.upn.as_ref()),
            opt_text(i.nhs_number.as_ref()),
            text(&i.given_name),
            opt_text(r.preferred_name.as_ref()),
            text(&i.family_name),
            Val::Date(Some(i.birth_date)),
            text(i.sex.as_str()),
            text(&i.address.postcode),
            text(&i.address.line),
            text(&i.address.town),
            text(&r.school_urn),
            Val::Int(i32::from(r.on_roll)),
            Val::Int(r.year_group),
            text(&r.send_status),
        ]);
        for t in &r.attendance {
            attendance.push(vec![
                text(&i.local_id),
                text(&t.term),
                Val::Date(Some(t.term_start)),
                Val::Int(t.possible_sessions),
                Val::Int(t.attended_sessions),
            ]);
        }
        for e in &r.exclusions {
            exclusions.push(vec![
                Val::Int(exclusions.len() as i32 + 1),
                text(&i.local_id),
                text(e.kind.as_str()),
                Val::Date(Some(e.start_date)),
                Val::Int(e.days),
                text(&e.reason),
            ]);
        }
    }
    vec![
        Table {
            name: "pupils",
            columns: &[
                ("pupil_id", "VARCHAR(32) NOT NULL PRIMARY KEY"),
                ("upn", "VARCHAR(16)"),
                ("nhs_number", "VARCHAR(16)"),
                ("given_name", "VARCHAR(100) NOT NULL"),
                ("preferred_name", "VARCHAR(100)"),
                ("family_name", "VARCHAR(100) NOT NULL"),
                ("birth_date", "DATE NOT NULL"),
                ("sex", "VARCHAR(16)"),
                ("postcode", "VARCHAR(10)"),
                ("address_line", "VARCHAR(200)"),
                ("town", "VARCHAR(100)"),
                ("school_urn", "VARCHAR(16) NOT NULL"),
                ("on_roll", "INTEGER NOT NULL"),
                ("year_group", "INTEGER"),
                ("send_status", "VARCHAR(32)"),
            ],
            index: None,
            rows: pupils,
        },
        Table {
            name: "attendance",
            columns: &[
                ("pupil_id", "VARCHAR(32) NOT NULL"),
                ("term", "VARCHAR(32) NOT NULL"),
                ("term_start", "DATE NOT NULL"),
                ("possible_sessions", "INTEGER NOT NULL"),
                ("attended_sessions", "INTEGER NOT NULL"),
            ],
            index: Some("pupil_id"),
            rows: attendance,
        },
        Table {
            name: "exclusions",
            columns: &[
                ("exclusion_id", "INTEGER NOT NULL PRIMARY KEY"),
                ("pupil_id", "VARCHAR(32) NOT NULL"),
                ("kind", "VARCHAR(16) NOT NULL"),
                ("start_date", "DATE NOT NULL"),
                ("days", "INTEGER NOT NULL"),
                ("reason", "VARCHAR(200)"),
            ],
            index: Some("pupil_id"),
            rows: exclusions,
        },
    ]
}

/// Drops, creates and fills the tables on one pool. A macro rather than a generic function:
/// the three pools are different types, and sqlx's higher-ranked executor bounds make a generic
/// version harder to read than the repetition it saves.
macro_rules! load_tables {
    ($pool:expr, $driver:expr, $tables:expr) => {{
        let pool = $pool;
        for t in $tables.iter().rev() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", t.name))
                .execute(&pool)
                .await?;
        }
        for t in $tables {
            sqlx::query(&t.create()).execute(&pool).await?;
            if let Some(col) = t.index {
                let sql = format!("CREATE INDEX {0}_{1} ON {0} ({1})", t.name, col);
                sqlx::query(&sql).execute(&pool).await?;
            }
        }
        let mut tx = pool.begin().await?;
        for t in $tables {
            let per_statement = (MAX_PARAMS / t.columns.len()).max(1);
            for chunk in t.rows.chunks(per_statement) {
                let sql = t.insert(chunk.len(), $driver);
                let mut q = sqlx::query(&sql);
                for v in chunk.iter().flatten() {
                    q = match v {
                        Val::Text(s) => q.bind(s.clone()),
                        Val::Date(d) => q.bind(*d),
                        Val::Int(i) => q.bind(*i),
                    };
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        pool.close().await;
    }};
}

async fn load(url: &str, tables: &[Table]) -> anyhow::Result<()> {
    let (driver, url) = Driver::from_url(url)?;
    match driver {
        Driver::Sqlite => {
            let options = SqliteConnectOptions::from_str(&url)?.create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            load_tables!(pool, driver, tables);
        }
        Driver::Postgres => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            load_tables!(pool, driver, tables);
        }
        Driver::MySql => {
            let pool = MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            load_tables!(pool, driver, tables);
        }
    }
    Ok(())
}

/// The list query and per-category queries the `sql` adapter runs against each database, in
/// each driver's dialect. Kept here, beside the DDL they depend on.
pub(crate) mod queries {
    use weft_adapters::sql::Driver;

    /// The placeholder for a query's only parameter.
    pub fn placeholder(d: Driver) -> &'static str {
        match d {
            Driver::Postgres => "$1",
            Driver::Sqlite | Driver::MySql => "?",
        }
    }

    /// `ROUND(100 * attended / possible, 1)` as a floating-point column: without the cast
    /// PostgreSQL and MySQL return NUMERIC/DECIMAL, which a client may not decode.
    pub fn attendance_percent(d: Driver) -> &'static str {
        match d {
            Driver::Sqlite => "ROUND(100.0 * attended_sessions / possible_sessions, 1)",
            Driver::Postgres => {
                "CAST(ROUND(100.0 * attended_sessions / possible_sessions, 1) AS DOUBLE PRECISION)"
            }
            // `+ 0E0` turns DECIMAL into DOUBLE on every MySQL and MariaDB version.
            Driver::MySql => "ROUND(100.0 * attended_sessions / possible_sessions, 1) + 0E0",
        }
    }

    pub fn social_care_list() -> String {
        "SELECT person_id AS local_id, nhs_number, upn, given_name, family_name, birth_date, \
         sex, postcode, address_line AS address_line1, town AS address_line2 \
         FROM persons ORDER BY person_id"
            .to_string()
    }

    /// (category, sql, many-rows field)
    pub fn social_care(d: Driver) -> Vec<(&'static str, String, Option<&'static str>)> {
        let p = placeholder(d);
        vec![
            (
                "identity.core",
                format!(
                    "SELECT given_name, family_name, birth_date, sex FROM persons \
                     WHERE person_id = {p}"
                ),
                None,
            ),
            (
                "identity.contact",
                format!("SELECT postcode FROM persons WHERE person_id = {p}"),
                None,
            ),
            (
                "social_care.status",
                format!(
                    "SELECT kind, category, start_date, end_date FROM episodes \
                     WHERE person_id = {p} ORDER BY start_date, episode_id"
                ),
                Some("episodes"),
            ),
            (
                "social_care.allocated_worker",
                format!("SELECT worker, team, phone FROM allocations WHERE person_id = {p}"),
                None,
            ),
            (
                "social_care.case_notes",
                format!(
                    "SELECT noted_on, note FROM case_notes WHERE person_id = {p} \
                     ORDER BY noted_on, note_id"
                ),
                Some("notes"),
            ),
        ]
    }

    pub fn education_list() -> String {
        "SELECT pupil_id AS local_id, upn, nhs_number, given_name, family_name, birth_date, \
         sex, postcode, address_line AS address_line1, town AS address_line2 \
         FROM pupils ORDER BY pupil_id"
            .to_string()
    }

    pub fn education(d: Driver) -> Vec<(&'static str, String, Option<&'static str>)> {
        let p = placeholder(d);
        let pct = attendance_percent(d);
        vec![
            (
                "identity.core",
                format!(
                    "SELECT given_name, preferred_name, family_name, birth_date, sex FROM pupils \
                     WHERE pupil_id = {p}"
                ),
                None,
            ),
            (
                "identity.contact",
                format!("SELECT postcode FROM pupils WHERE pupil_id = {p}"),
                None,
            ),
            (
                "education.enrolment",
                format!("SELECT school_urn, on_roll, year_group FROM pupils WHERE pupil_id = {p}"),
                None,
            ),
            (
                "education.attendance",
                format!(
                    "SELECT term, possible_sessions, attended_sessions, {pct} AS attendance_percent \
                     FROM attendance WHERE pupil_id = {p} ORDER BY term_start"
                ),
                Some("terms"),
            ),
            (
                "education.exclusions",
                format!(
                    "SELECT kind, start_date, days, reason FROM exclusions WHERE pupil_id = {p} \
                     ORDER BY start_date, exclusion_id"
                ),
                Some("exclusions"),
            ),
            (
                "education.send",
                format!("SELECT send_status FROM pupils WHERE pupil_id = {p}"),
                None,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::{generate, System};
    use sqlx::Row;
    use weft_adapters::testkit;

    fn expected_people(pop: &Population, system: System) -> usize {
        pop.children.iter().filter(|c| c.present_in(system)).count()
    }

    macro_rules! check_seed {
        ($pool:expr, $driver:expr, $pop:expr) => {{
            let pool = $pool;
            let pop = $pop;
            let count = |table: &'static str| {
                let pool = &pool;
                async move {
                    let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                        .fetch_one(pool)
                        .await
                        .unwrap();
                    row.get::<i64, _>("n") as usize
                }
            };
            assert_eq!(
                count("persons").await,
                expected_people(pop, System::SocialCare)
            );
            assert_eq!(count("pupils").await, expected_people(pop, System::School));
            let episodes: usize = pop.social_care_records().map(|r| r.episodes.len()).sum();
            assert_eq!(count("episodes").await, episodes);

            // Every configured query runs, with the local id bound, in this driver's dialect.
            let child = pop.scenario().unwrap();
            let sc_id = child.local_id(System::SocialCare).unwrap();
            let school_id = child.local_id(System::School).unwrap();
            for (_, sql, _) in queries::social_care($driver) {
                sqlx::query(&sql)
                    .bind(sc_id)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            }
            for (_, sql, _) in queries::education($driver) {
                sqlx::query(&sql)
                    .bind(school_id)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            }
            sqlx::query(&queries::social_care_list())
                .fetch_all(&pool)
                .await
                .unwrap();
            sqlx::query(&queries::education_list())
                .fetch_all(&pool)
                .await
                .unwrap();

            let (_, attendance, _) = queries::education($driver)
                .into_iter()
                .find(|(c, _, _)| *c == "education.attendance")
                .unwrap();
            let rows = sqlx::query(&attendance)
                .bind(school_id)
                .fetch_all(&pool)
                .await
                .unwrap();
            let pct: Vec<f64> = rows.iter().map(|r| r.get("attendance_percent")).collect();
            assert_eq!(pct, vec![94.4, 91.5, 85.9, 80.0]);
            let birth: NaiveDate = sqlx::query(&format!(
                "SELECT birth_date FROM persons WHERE person_id = {}",
                queries::placeholder($driver)
            ))
            .bind(sc_id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("birth_date");
            assert_eq!(birth, child.truth.birth_date);
            pool.close().await;
        }};
    }

    /// Seeds both schemas into one database twice (the second run must replace, not add), then
    /// runs every configured query against it.
    async fn seed_and_check(url: &str) {
        let pop = generate(21, 60);
        for _ in 0..2 {
            seed_social_care(url, &pop).await.unwrap();
            seed_education(url, &pop).await.unwrap();
        }
        let (driver, url) = Driver::from_url(url).unwrap();
        match driver {
            Driver::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                check_seed!(pool, driver, &pop);
            }
            Driver::Postgres => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                check_seed!(pool, driver, &pop);
            }
            Driver::MySql => {
                let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
                check_seed!(pool, driver, &pop);
            }
        }
    }

    #[tokio::test]
    async fn seeds_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        seed_and_check(&sqlite_url(&dir.path().join("both.db"))).await;
    }

    #[tokio::test]
    async fn seeds_postgres_when_configured() {
        let Some(db) = testkit::fresh_postgres().await else {
            return;
        };
        seed_and_check(&db.url).await;
        db.drop_db().await.unwrap();
    }

    #[tokio::test]
    async fn seeds_mariadb_when_configured() {
        let Some(db) = testkit::fresh_mariadb().await else {
            return;
        };
        seed_and_check(&db.url).await;
        db.drop_db().await.unwrap();
    }
}
