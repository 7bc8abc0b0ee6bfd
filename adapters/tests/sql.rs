//! The SQL adapter against real databases: the same battery on PostgreSQL, MariaDB and SQLite,
//! each test in a database of its own (see `weft_adapters::testkit`).
//!
//! PostgreSQL and MariaDB tests need `WEFT_TEST_POSTGRES_URL` / `WEFT_TEST_MARIADB_URL`; without
//! them they say so on stderr and pass without running. SQLite always runs.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use weft_adapters::sql::{Driver, Rows, SqlAdapter, SqlConfig, SqlQuery};
use weft_adapters::testkit::{fresh_mariadb, fresh_postgres, fresh_sqlite, FreshDb};
use weft_adapters::{Adapter, AdapterError, Demographics, Identifier, Item, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    MariaDb,
    Sqlite,
}

/// A fresh database and, for SQLite, the directory its file lives in.
struct TestDb {
    db: FreshDb,
    dialect: Dialect,
    _dir: Option<TempDir>,
}

impl TestDb {
    async fn new(dialect: Dialect) -> Option<TestDb> {
        let (db, dir) = match dialect {
            Dialect::Postgres => (fresh_postgres().await?, None),
            Dialect::MariaDb => (fresh_mariadb().await?, None),
            Dialect::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (fresh_sqlite(dir.path()), Some(dir))
            }
        };
        Some(TestDb {
            db,
            dialect,
            _dir: dir,
        })
    }

    async fn with_schema(dialect: Dialect) -> Option<TestDb> {
        let t = Self::new(dialect).await?;
        t.db.execute(&schema(dialect)).await.unwrap();
        Some(t)
    }

    async fn drop(self) {
        self.db.drop_db().await.unwrap();
    }

    fn config(&self, list: &str, queries: Vec<SqlQuery>) -> SqlConfig {
        SqlConfig {
            preset: None,
            schema: None,
            url: self.db.url.clone(),
            list: list.to_owned(),
            queries,
            max_connections: 2,
        }
    }

    fn adapter(&self, queries: Vec<SqlQuery>) -> SqlAdapter {
        SqlAdapter::new(self.config(LIST, queries)).unwrap()
    }

    /// `WHERE <column> = <the local id>` in this dialect: PostgreSQL will not compare an
    /// integer column with the text parameter without a cast.
    fn id_is(&self, column: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!("{column} = $1::int"),
            Dialect::MariaDb | Dialect::Sqlite => format!("{column} = ?"),
        }
    }
}

fn schema(dialect: Dialect) -> String {
    // MariaDB's TIMESTAMP turns NULL into "now"; DATETIME is the plain type there.
    let timestamp = match dialect {
        Dialect::Postgres => "TIMESTAMP",
        Dialect::MariaDb | Dialect::Sqlite => "DATETIME",
    };
    format!(
        "CREATE TABLE person (
            id INTEGER PRIMARY KEY,
            nhs_number VARCHAR(10),
            upn VARCHAR(13),
            la_child_id VARCHAR(20),
            given_name VARCHAR(50),
            family_name VARCHAR(50),
            birth_date DATE,
            sex VARCHAR(1),
            postcode VARCHAR(10),
            middle_names VARCHAR(50),
            former_surnames VARCHAR(100),
            house VARCHAR(50),
            town VARCHAR(50),
            uprn VARCHAR(12),
            carer_phone VARCHAR(20),
            family_id VARCHAR(20),
            former_upn VARCHAR(13),
            cp_plan BOOLEAN,
            attendance NUMERIC(5,2),
            updated_at {timestamp}
        );
        CREATE TABLE episodes (
            id INTEGER PRIMARY KEY,
            person_id INTEGER NOT NULL,
            start_date DATE NOT NULL,
            end_date DATE,
            reason VARCHAR(50),
            legal_status VARCHAR(5)
        );
        INSERT INTO person VALUES
            (1, '9912003888', 'B801200005001', 'LA-001', 'Amy', 'Bloggs', '2011-03-04', 'F',
             'AB1 2CD', 'Rose', 'Smith; Jones', '12 High Street', 'Leeds', '100023336956',
             '01632 960587', 'FAM-9', 'A801200005001', TRUE, 87.50, '2024-01-02 03:04:05'),
            (2, NULL, 'P207000016049', NULL, 'Ben', 'Bloggs', '2013-07-08', 'M', NULL,
             NULL, NULL, NULL, NULL, NULL, NULL, 'FAM-9', NULL, FALSE, NULL, NULL),
            (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL);
        INSERT INTO episodes VALUES
            (10, 1, '2023-05-01', '2023-09-30', 'N1', 'C2'),
            (11, 1, '2024-02-01', NULL, 'N4', 'J2');"
    )
}

const LIST: &str = "SELECT id AS local_id, nhs_number, upn, la_child_id, given_name, family_name, \
                    birth_date, sex, postcode, middle_names, former_surnames AS former_family_names, \
                    house AS address_line1, town AS address_line2, uprn, carer_phone, family_id, \
                    former_upn FROM person ORDER BY id";

fn query(category: &str, sql: String, rows: Rows, field: Option<&str>) -> SqlQuery {
    SqlQuery {
        category: category.into(),
        sql,
        rows,
        field: field.map(str::to_owned),
    }
}

fn person_queries(t: &TestDb) -> Vec<SqlQuery> {
    vec![
        query(
            "identity.core",
            format!(
                "SELECT given_name, family_name, birth_date, cp_plan, attendance, updated_at \
                 FROM person WHERE {}",
                t.id_is("id")
            ),
            Rows::One,
            None,
        ),
        query(
            "social_care.episodes",
            format!(
                "SELECT start_date, end_date, reason FROM episodes WHERE {} ORDER BY start_date",
                t.id_is("person_id")
            ),
            Rows::Many,
            None,
        ),
        query(
            "social_care.status",
            format!(
                "SELECT legal_status FROM episodes WHERE {} ORDER BY start_date",
                t.id_is("person_id")
            ),
            Rows::Many,
            Some("legal_statuses"),
        ),
    ]
}

fn value<'a>(items: &'a [Item], category: &str, field: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i.category == category && i.field == field)
        .map(|i| &i.value)
        .unwrap_or_else(|| panic!("no item {category}/{field} in {items:#?}"))
}

async fn list_maps_columns(dialect: Dialect) {
    let Some(t) = TestDb::with_schema(dialect).await else {
        return;
    };
    let records = t.adapter(vec![]).list().await.unwrap().unwrap();
    assert_eq!(records.len(), 3);

    let amy = &records[0];
    assert_eq!(amy.local_id, "1");
    assert_eq!(
        amy.identifiers,
        vec![
            Identifier::new("nhs_number", "9912003888"),
            Identifier::new("upn", "B801200005001"),
            Identifier::new("la_child_id", "LA-001"),
            Identifier::new("former_upn", "A801200005001"),
        ]
    );
    assert_eq!(
        amy.demographics,
        Demographics {
            given_name: Some("Amy".into()),
            family_name: Some("Bloggs".into()),
            birth_date: Some("2011-03-04".into()),
            sex: Some("F".into()),
            postcode: Some("AB1 2CD".into()),
            middle_names: Some("Rose".into()),
            former_family_names: vec!["Smith".into(), "Jones".into()],
            address_lines: vec!["12 High Street".into(), "Leeds".into()],
            former_addresses: vec![],
            household: vec![
                "uprn:100023336956".into(),
                "phone:01632960587".into(),
                "family:FAM9".into(),
            ],
        }
    );
    assert_eq!(records[1].demographics.household, ["family:FAM9"]);
    // NULL identifiers are skipped, not turned into empty ones.
    assert_eq!(records[1].local_id, "2");
    assert_eq!(
        records[1].identifiers,
        vec![Identifier::new("upn", "P207000016049")]
    );
    assert_eq!(records[1].demographics.postcode, None);
    assert_eq!(records[2].local_id, "3");
    assert!(records[2].identifiers.is_empty());
    assert_eq!(records[2].demographics, Demographics::default());
    t.drop().await;
}

async fn find_by_identifier(dialect: Dialect) {
    let Some(t) = TestDb::with_schema(dialect).await else {
        return;
    };
    let a = t.adapter(vec![]);
    let probe = |kind: &str, value: &str| Probe {
        identifiers: vec![Identifier::new(kind, value)],
        ..Probe::default()
    };
    let found = a.find(&probe("upn", "P207000016049")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].local_id, "2");
    let found = a.find(&probe("la_child_id", "LA-001")).await.unwrap();
    assert_eq!(found[0].local_id, "1");
    assert!(a
        .find(&probe("nhs_number", "9000000009"))
        .await
        .unwrap()
        .is_empty());
    // Demographics alone are not searched: that is the master child index's job.
    let by_name = Probe {
        demographics: Demographics {
            family_name: Some("Bloggs".into()),
            birth_date: Some("2011-03-04".into()),
            ..Demographics::default()
        },
        ..Probe::default()
    };
    assert!(a.find(&by_name).await.unwrap().is_empty());
    t.drop().await;
}

async fn fetch_one_and_many_rows(dialect: Dialect) {
    let Some(t) = TestDb::with_schema(dialect).await else {
        return;
    };
    let a = t.adapter(person_queries(&t));
    let items = a.fetch("1").await.unwrap().unwrap();
    assert_eq!(value(&items, "identity.core", "given_name"), &json!("Amy"));
    assert_eq!(
        value(&items, "identity.core", "family_name"),
        &json!("Bloggs")
    );
    assert_eq!(
        value(&items, "identity.core", "birth_date"),
        &json!("2011-03-04")
    );
    assert_eq!(value(&items, "identity.core", "cp_plan"), &json!(true));
    assert_eq!(
        value(&items, "identity.core", "updated_at"),
        &json!("2024-01-02T03:04:05")
    );
    // Exact decimal text where the database keeps it; SQLite stores NUMERIC as a REAL.
    let attendance = match dialect {
        Dialect::Postgres | Dialect::MariaDb => json!("87.50"),
        Dialect::Sqlite => json!(87.5),
    };
    assert_eq!(value(&items, "identity.core", "attendance"), &attendance);
    assert_eq!(
        value(&items, "social_care.episodes", "episodes"),
        &json!([
            {"start_date": "2023-05-01", "end_date": "2023-09-30", "reason": "N1"},
            {"start_date": "2024-02-01", "end_date": null, "reason": "N4"},
        ])
    );
    assert_eq!(
        value(&items, "social_care.status", "legal_statuses"),
        &json!([{"legal_status": "C2"}, {"legal_status": "J2"}])
    );
    assert_eq!(items.len(), 8);

    // A person with no episodes: the record exists, its episodes are an empty list.
    let items = a.fetch("2").await.unwrap().unwrap();
    assert_eq!(value(&items, "identity.core", "cp_plan"), &json!(false));
    assert_eq!(value(&items, "identity.core", "attendance"), &Value::Null);
    assert_eq!(
        value(&items, "social_care.episodes", "episodes"),
        &json!([])
    );
    t.drop().await;
}

async fn unknown_id_is_no_record(dialect: Dialect) {
    let Some(t) = TestDb::with_schema(dialect).await else {
        return;
    };
    let a = t.adapter(person_queries(&t));
    assert_eq!(a.fetch("999").await.unwrap(), None);
    t.drop().await;
}

async fn bad_sql_is_a_database_error(dialect: Dialect) {
    let Some(t) = TestDb::with_schema(dialect).await else {
        return;
    };
    let a = t.adapter(vec![query(
        "identity.core",
        "SELEC given_name FROM person".into(),
        Rows::One,
        None,
    )]);
    let err = a.fetch("1").await.unwrap_err();
    assert!(matches!(err, AdapterError::Database(_)), "{err:?}");
    assert_eq!(err.reason(), "database_error");

    let missing_table =
        SqlAdapter::new(t.config("SELECT id AS local_id FROM nowhere", vec![])).unwrap();
    let err = missing_table.list().await.unwrap_err();
    assert!(matches!(err, AdapterError::Database(_)), "{err:?}");

    let no_local_id = SqlAdapter::new(t.config("SELECT id, upn FROM person", vec![])).unwrap();
    let err = no_local_id.list().await.unwrap_err();
    assert!(matches!(err, AdapterError::Config(_)), "{err:?}");
    t.drop().await;
}

async fn unreachable_is_a_connect_error(dialect: Dialect) {
    let url = match dialect {
        Dialect::Postgres => format!(
            "postgres://postgres@127.0.0.1:{}/weft",
            common::refused_port()
        ),
        Dialect::MariaDb => format!("mariadb://root@127.0.0.1:{}/weft", common::refused_port()),
        Dialect::Sqlite => "sqlite:///nonexistent-weft-directory/weft.db".to_owned(),
    };
    let config = SqlConfig {
        preset: None,
        schema: None,
        url,
        list: LIST.into(),
        queries: vec![query("identity.core", "SELECT 1".into(), Rows::One, None)],
        max_connections: 1,
    };
    // Building never connects: a source that is down must not stop start-up.
    let a = SqlAdapter::with_acquire_timeout(config, Duration::from_millis(500)).unwrap();
    let err = a.list().await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
    assert_eq!(err.reason(), "connection_failed");
    let err = a.fetch("1").await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
}

/// A server that is up but has no such database is a connection problem too.
async fn missing_database_is_a_connect_error(dialect: Dialect) {
    let Some(t) = TestDb::new(dialect).await else {
        return;
    };
    let url = t.db.url.replace(t.db.name(), "weft_no_such_database");
    let config = SqlConfig {
        preset: None,
        schema: None,
        url,
        list: LIST.into(),
        queries: vec![],
        max_connections: 1,
    };
    let a = SqlAdapter::with_acquire_timeout(config, Duration::from_secs(2)).unwrap();
    let err = a.list().await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
    t.drop().await;
}

/// Every column type the adapter claims to read, decoded into the JSON it promises.
async fn column_types(dialect: Dialect) {
    let Some(t) = TestDb::new(dialect).await else {
        return;
    };
    let (ddl, expected) = match dialect {
        Dialect::Postgres => (
            r#"CREATE TYPE mood AS ENUM ('happy', 'sad');
            CREATE TABLE typed (id INT PRIMARY KEY, a_int2 INT2, a_int4 INT4, a_int8 INT8,
                a_float4 FLOAT4, a_float8 FLOAT8, a_numeric NUMERIC(10,3), a_negative NUMERIC,
                a_big NUMERIC, a_small NUMERIC, a_zero NUMERIC(4,2), a_nan NUMERIC,
                a_text TEXT, a_varchar VARCHAR(5), a_char CHAR(2), a_bool BOOL, a_date DATE,
                a_time TIME, a_timestamp TIMESTAMP, a_timestamptz TIMESTAMPTZ, a_json JSON,
                a_jsonb JSONB, a_uuid UUID, a_bytea BYTEA, a_enum mood, a_null TEXT);
            INSERT INTO typed VALUES (1, 1, 2, 3, 1.5, 2.25, 12.345, -0.05, 123456789.5, 0.0001,
                0, 'NaN', 'x', 'y', 'z', TRUE, '2024-02-29', '13:14:15',
                '2024-01-02 03:04:05.5', '2024-01-02 03:04:05+01', '{"b": 1}',
                '{"a": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x0102ff', 'happy',
                NULL);"#,
            json!({
                "id": 1, "a_int2": 1, "a_int4": 2, "a_int8": 3, "a_float4": 1.5, "a_float8": 2.25,
                "a_numeric": "12.345", "a_negative": "-0.05", "a_big": "123456789.5",
                "a_small": "0.0001", "a_zero": "0.00", "a_nan": "NaN",
                "a_text": "x", "a_varchar": "y", "a_char": "z ", "a_bool": true,
                "a_date": "2024-02-29", "a_time": "13:14:15",
                "a_timestamp": "2024-01-02T03:04:05.500", "a_timestamptz": "2024-01-02T02:04:05Z",
                "a_json": {"b": 1}, "a_jsonb": {"a": [1, 2]},
                "a_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a_bytea": "\\x0102ff",
                "a_enum": "happy", "a_null": null,
            }),
        ),
        Dialect::MariaDb => (
            r#"CREATE TABLE typed (id INT PRIMARY KEY, a_tinyint TINYINT, a_bool BOOLEAN,
                a_smallint SMALLINT, a_mediumint MEDIUMINT, a_bigint BIGINT,
                a_uint INT UNSIGNED, a_ubigint BIGINT UNSIGNED, a_float FLOAT, a_double DOUBLE,
                a_decimal DECIMAL(10,3), a_negative DECIMAL(4,2), a_char CHAR(2),
                a_varchar VARCHAR(5), a_text TEXT, a_date DATE, a_time TIME,
                a_datetime DATETIME(3), a_timestamp TIMESTAMP NULL, a_json JSON, a_blob BLOB,
                a_enum ENUM('happy', 'sad'), a_null VARCHAR(1));
            INSERT INTO typed VALUES (1, 5, TRUE, -300, 70000, 9007199254740993, 4000000000,
                18446744073709551615, 1.5, 2.25, 12.345, -0.05, 'z', 'y', 'x', '2024-02-29',
                '13:14:15', '2024-01-02 03:04:05.5', '2024-01-02 03:04:05', '{"a": [1, 2]}',
                X'0102FF', 'happy', NULL);"#,
            json!({
                "id": 1, "a_tinyint": 5, "a_bool": true, "a_smallint": -300, "a_mediumint": 70000,
                "a_bigint": 9007199254740993_i64, "a_uint": 4000000000_u64,
                "a_ubigint": 18446744073709551615_u64, "a_float": 1.5, "a_double": 2.25,
                "a_decimal": "12.345", "a_negative": "-0.05", "a_char": "z", "a_varchar": "y",
                "a_text": "x", "a_date": "2024-02-29", "a_time": "13:14:15",
                "a_datetime": "2024-01-02T03:04:05.500", "a_timestamp": "2024-01-02T03:04:05Z",
                // MariaDB's JSON is text in a binary collation: passed on as the text.
                "a_json": "{\"a\": [1, 2]}", "a_blob": "\\x0102ff", "a_enum": "happy",
                "a_null": null,
            }),
        ),
        Dialect::Sqlite => (
            r#"CREATE TABLE typed (id INTEGER PRIMARY KEY, a_int INTEGER, a_real REAL,
                a_text TEXT, a_bool BOOLEAN, a_date DATE, a_datetime DATETIME,
                a_numeric NUMERIC, a_blob BLOB, a_null TEXT, a_odd_date DATE, a_any);
            INSERT INTO typed VALUES (1, 42, 1.5, 'x', 1, '2024-02-29', '2024-01-02 03:04:05',
                12.5, X'0102FF', NULL, '22/10/2010', 'anything');"#,
            json!({
                "id": 1, "a_int": 42, "a_real": 1.5, "a_text": "x", "a_bool": true,
                "a_date": "2024-02-29", "a_datetime": "2024-01-02T03:04:05", "a_numeric": 12.5,
                "a_blob": "\\x0102ff", "a_null": null,
                // Not a date SQLite can read: passed on as written.
                "a_odd_date": "22/10/2010", "a_any": "anything",
            }),
        ),
    };
    t.db.execute(ddl).await.unwrap();
    let a = t.adapter(vec![query(
        "test.types",
        format!("SELECT * FROM typed WHERE {}", t.id_is("id")),
        Rows::Many,
        Some("rows"),
    )]);
    let items = a.fetch("1").await.unwrap().unwrap();
    assert_eq!(value(&items, "test.types", "rows"), &json!([expected]));

    // Computed columns have no declared type; they are read by what they hold.
    let a = t.adapter(vec![query(
        "test.types",
        format!(
            "SELECT id + 1 AS next_id, 'lit' AS literal FROM typed WHERE {}",
            t.id_is("id")
        ),
        Rows::One,
        None,
    )]);
    let items = a.fetch("1").await.unwrap().unwrap();
    assert_eq!(value(&items, "test.types", "next_id"), &json!(2));
    assert_eq!(value(&items, "test.types", "literal"), &json!("lit"));
    t.drop().await;
}

macro_rules! battery {
    ($module:ident, $dialect:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn list_maps_columns() {
                super::list_maps_columns($dialect).await
            }
            #[tokio::test]
            async fn find_by_identifier() {
                super::find_by_identifier($dialect).await
            }
            #[tokio::test]
            async fn fetch_one_and_many_rows() {
                super::fetch_one_and_many_rows($dialect).await
            }
            #[tokio::test]
            async fn unknown_id_is_no_record() {
                super::unknown_id_is_no_record($dialect).await
            }
            #[tokio::test]
            async fn bad_sql_is_a_database_error() {
                super::bad_sql_is_a_database_error($dialect).await
            }
            #[tokio::test]
            async fn unreachable_is_a_connect_error() {
                super::unreachable_is_a_connect_error($dialect).await
            }
            #[tokio::test]
            async fn column_types() {
                super::column_types($dialect).await
            }
        }
    };
}

battery!(postgres, Dialect::Postgres);
battery!(mariadb, Dialect::MariaDb);
battery!(sqlite, Dialect::Sqlite);

#[tokio::test]
async fn postgres_missing_database_is_a_connect_error() {
    missing_database_is_a_connect_error(Dialect::Postgres).await
}

#[tokio::test]
async fn mariadb_missing_database_is_a_connect_error() {
    missing_database_is_a_connect_error(Dialect::MariaDb).await
}

/// A data error quotes the offending value, which is the local id; the message is withheld.
#[tokio::test]
async fn postgres_data_errors_do_not_quote_the_id() {
    let Some(t) = TestDb::with_schema(Dialect::Postgres).await else {
        return;
    };
    let a = t.adapter(person_queries(&t));
    let err = a.fetch("not-a-number").await.unwrap_err();
    assert!(matches!(err, AdapterError::Database(_)), "{err:?}");
    assert!(err.to_string().contains("22P02"), "{err}");
    assert!(!err.to_string().contains("not-a-number"), "{err}");
    t.drop().await;
}

#[tokio::test]
async fn postgres_unreadable_type_names_the_column() {
    let Some(t) = TestDb::new(Dialect::Postgres).await else {
        return;
    };
    let a = SqlAdapter::new(t.config(
        LIST,
        vec![query(
            "test.types",
            "SELECT '1 day'::interval AS waited WHERE $1::text IS NOT NULL".into(),
            Rows::One,
            None,
        )],
    ))
    .unwrap();
    let err = a.fetch("1").await.unwrap_err();
    assert!(matches!(err, AdapterError::Database(_)), "{err:?}");
    assert!(err.to_string().contains("`waited`"), "{err}");
    assert!(err.to_string().contains("INTERVAL"), "{err}");
    t.drop().await;
}

#[test]
fn driver_follows_the_url_scheme() {
    let cases = [
        ("postgres://u@h/db", Driver::Postgres, "postgres://u@h/db"),
        (
            "postgresql://u@h/db",
            Driver::Postgres,
            "postgresql://u@h/db",
        ),
        ("mysql://u@h/db", Driver::MySql, "mysql://u@h/db"),
        (
            "mariadb://u:p@h:3306/db",
            Driver::MySql,
            "mysql://u:p@h:3306/db",
        ),
        (
            "sqlite://weft.db?mode=ro",
            Driver::Sqlite,
            "sqlite://weft.db?mode=ro",
        ),
        ("sqlite::memory:", Driver::Sqlite, "sqlite::memory:"),
    ];
    for (url, driver, normalised) in cases {
        assert_eq!(
            Driver::from_url(url).unwrap(),
            (driver, normalised.to_owned())
        );
    }
    for url in ["oracle://u@h/db", "no-scheme", "mssql://secret@h/db"] {
        let err = Driver::from_url(url).unwrap_err();
        assert!(matches!(err, AdapterError::Config(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}

#[tokio::test]
async fn sql_config_reads_from_the_configuration_file() {
    let config: weft_adapters::AdapterConfig = serde_json::from_value(json!({
        "kind": "sql",
        "url": "mariadb://weft@db.example/reporting",
        "list": "SELECT id AS local_id, upn FROM pupils",
        "queries": [
            {"category": "education.attendance", "sql": "SELECT pct FROM attendance WHERE pupil = ?"},
            {"category": "education.exclusions", "sql": "SELECT * FROM exclusions WHERE pupil = ?",
             "rows": "many"}
        ]
    }))
    .unwrap();
    assert_eq!(config.kind(), "sql");
    // Lazy pools: building works with the database nowhere to be seen.
    assert!(config.build().is_ok());
}
