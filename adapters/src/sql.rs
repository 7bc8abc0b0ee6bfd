//! Configured, parameterised SQL against a source's reporting database over a real connection,
//! or a ready mapping ([`Preset`]) for a database in a standard shape.

pub mod ssd;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::mysql::{MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow, PgTypeKind, PgValueFormat};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, ColumnIndex, Decode, Row, Type, TypeInfo, ValueRef};

use crate::record::{
    address_lines, household, scalar_text, truthy, Address, Demographics, Identifier, Item, Probe,
    SourceRecord, RESTRICTION_MARKERS,
};
use crate::{error_chain, Adapter, AdapterError};

/// A reporting database. The driver follows the URL scheme: `postgres://`, `mysql://` (also
/// `mariadb://`) or `sqlite:`. Queries are written in that database's own dialect.
///
/// The local id is bound as text (`$1` on PostgreSQL, `?` on MySQL/MariaDB and SQLite).
/// MySQL and SQLite convert it to a number where a column needs one; PostgreSQL does not, so
/// write `WHERE id = $1::int` (or compare as text) against an integer key there.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    pub url: String,
    /// A ready mapping for a database in a standard shape; `list` and `queries` may then be
    /// left out (a `list` given replaces the preset's, `queries` given are added to its).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The schema (PostgreSQL) or database (MariaDB/MySQL) holding the preset's tables, when
    /// they are not in the connection's default one (SSD extracts often use `ssd_development`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Lists every person for the master child index. Recognised columns: `local_id` (required),
    /// `nhs_number`, `upn`, `given_name`, `family_name`, `birth_date`, `sex`, `postcode`,
    /// `middle_names`, `former_family_names` and `former_postcodes` (several separated by `;`),
    /// `address_line1`… (any columns named `address_line…`, in query order), `address_json`
    /// (the SSD's address object), the household keys `uprn`, `household_phone` (or
    /// `carer_phone`), `carer_id` and `family_id`, and the restriction markers `restricted`,
    /// `protected_address` and `refuge` (true, a non-zero number, `yes`, `y`, `true` or `1`
    /// restricts the record); any other column (`former_upn`, a case
    /// number) is a source-scoped identifier of that name. Required without a preset.
    #[serde(default)]
    pub list: String,
    /// One query per data category, each taking the record's local id as its only parameter.
    #[serde(default)]
    pub queries: Vec<SqlQuery>,
    /// Pool size; the default suits a reporting replica.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

/// Configurations get logged; a password in the URL must not be.
impl std::fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &url_without_password(&self.url))
            .field("preset", &self.preset)
            .field("schema", &self.schema)
            .field("list", &self.list)
            .field("queries", &self.queries)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The URL with any password replaced; an unparseable URL is hidden whole, since where its
/// password is cannot be known.
fn url_without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Cannot fail: a URL with a password has a host.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "***".to_owned(),
    }
}

fn default_pool() -> u32 {
    8
}

/// Ready mappings for reporting databases in a published shape.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The Standard Safeguarding Dataset: see [`ssd`].
    Ssd,
}

impl SqlConfig {
    /// A configuration for a database in a standard shape: only the connection string.
    pub fn preset(url: impl Into<String>, preset: Preset) -> SqlConfig {
        SqlConfig {
            url: url.into(),
            preset: Some(preset),
            schema: None,
            list: String::new(),
            queries: Vec::new(),
            max_connections: default_pool(),
        }
    }

    /// The list query and category queries that will run: the preset's, with what the
    /// configuration adds or replaces. This is what `weft` shows an administrator for review.
    pub fn resolved(&self) -> Result<(String, Vec<SqlQuery>), AdapterError> {
        let (driver, _) = Driver::from_url(&self.url)?;
        let schema = self.schema.as_deref();
        if let Some(s) = schema {
            if !ssd::valid_schema(s) {
                return Err(AdapterError::Config(
                    "schema must be a plain identifier (letters, digits, underscore)".into(),
                ));
            }
        }
        let (list, mut queries) = match self.preset {
            Some(Preset::Ssd) => (ssd::list(driver, schema), ssd::queries(driver, schema)),
            None => {
                if schema.is_some() {
                    return Err(AdapterError::Config(
                        "schema applies to a preset's tables; write it into your own queries"
                            .into(),
                    ));
                }
                (String::new(), Vec::new())
            }
        };
        let list = if self.list.trim().is_empty() {
            list
        } else {
            self.list.clone()
        };
        if list.trim().is_empty() {
            return Err(AdapterError::Config(
                "a list query is required (or a preset)".into(),
            ));
        }
        queries.extend(self.queries.iter().cloned());
        Ok((list, queries))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqlQuery {
    pub category: String,
    pub sql: String,
    /// `one`: the first row's columns become fields. `many`: all rows become one field holding
    /// an array of row objects, named by `field`.
    #[serde(default)]
    pub rows: Rows,
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Rows {
    #[default]
    One,
    Many,
}

/// How long a query waits for a pooled connection, including opening one. A source that is down
/// refuses connections and sqlx keeps retrying until this runs out, so it bounds how long a
/// down source takes to be reported as `connection_failed`.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The database driver, chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Postgres,
    /// MySQL and MariaDB speak the same protocol.
    MySql,
    Sqlite,
}

impl Driver {
    /// The driver for a URL and the URL as that driver wants it (`mariadb://` becomes
    /// `mysql://`). Errors never quote the URL: it may hold a password.
    pub fn from_url(url: &str) -> Result<(Driver, String), AdapterError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(AdapterError::Config("SQL url has no scheme".into()));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok((Driver::Postgres, url.to_owned())),
            "mysql" => Ok((Driver::MySql, url.to_owned())),
            "mariadb" => Ok((Driver::MySql, format!("mysql:{rest}"))),
            "sqlite" => Ok((Driver::Sqlite, url.to_owned())),
            other => Err(AdapterError::Config(format!(
                "unknown SQL driver `{other}` (use postgres, mysql, mariadb or sqlite)"
            ))),
        }
    }

    /// Sorts a sqlx failure into what an administrator would fix: the connection (server down,
    /// wrong credentials, missing database) or the query.
    fn error(self, e: sqlx::Error, acquire_timeout: Duration) -> AdapterError {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => AdapterError::Connect(error_chain(&e)),
            sqlx::Error::PoolTimedOut => AdapterError::Connect(format!(
                "no connection within {}s (server unreachable or pool exhausted)",
                acquire_timeout.as_secs_f32()
            )),
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                AdapterError::Connect(e.to_string())
            }
            sqlx::Error::Configuration(_) => AdapterError::Config(error_chain(&e)),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if self.is_connect_failure(db.as_ref(), &code) {
                    return AdapterError::Connect(format!("{code}: {}", db.message()));
                }
                // Data exceptions and constraint violations quote the offending value, which may
                // be the local id; the code alone says what kind of problem it is.
                if code.starts_with("22") || code.starts_with("23") {
                    AdapterError::Database(format!("{code}: data error (message withheld)"))
                } else {
                    AdapterError::Database(format!("{code}: {}", db.message()))
                }
            }
            other => AdapterError::Database(error_chain(&other)),
        }
    }

    fn is_connect_failure(self, db: &dyn sqlx::error::DatabaseError, code: &str) -> bool {
        match self {
            // Connection exception, bad credentials, no such database.
            Driver::Postgres => {
                code.starts_with("08") || code.starts_with("28") || code.starts_with("3D")
            }
            // Access denied (database / user), unknown database, too many connections.
            Driver::MySql => db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(|e| matches!(e.number(), 1040 | 1044 | 1045 | 1049))
                .unwrap_or(false),
            // SQLITE_CANTOPEN: the file or its directory is not there, the analogue of a
            // server that is down.
            Driver::Sqlite => code == "14",
        }
    }
}

enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// Runs the configured queries against one reporting database.
pub struct SqlAdapter {
    config: SqlConfig,
    driver: Driver,
    pool: Pool,
    acquire_timeout: Duration,
}

/// One result row: column names and values, in the query's column order.
type Columns = Vec<(String, Value)>;

impl SqlAdapter {
    pub fn new(config: SqlConfig) -> Result<Self, AdapterError> {
        Self::with_acquire_timeout(config, DEFAULT_ACQUIRE_TIMEOUT)
    }

    /// As [`SqlAdapter::new`], with a different [`DEFAULT_ACQUIRE_TIMEOUT`].
    ///
    /// The pool is created without connecting, so a database that is down does not stop the
    /// gateway from starting.
    pub fn with_acquire_timeout(
        config: SqlConfig,
        acquire_timeout: Duration,
    ) -> Result<Self, AdapterError> {
        if config.max_connections == 0 {
            return Err(AdapterError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        let (driver, url) = Driver::from_url(&config.url)?;
        let (list, queries) = config.resolved()?;
        let config = SqlConfig {
            list,
            queries,
            ..config
        };
        let bad_url =
            |e: sqlx::Error| AdapterError::Config(format!("SQL url: {}", error_chain(&e)));
        let pool = match driver {
            Driver::Postgres => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(&url)
                    .map_err(bad_url)?,
            ),
            Driver::MySql => Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(&url)
                    .map_err(bad_url)?,
            ),
            Driver::Sqlite => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(&url)
                    .map_err(bad_url)?,
            ),
        };
        Ok(Self {
            config,
            driver,
            pool,
            acquire_timeout,
        })
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Runs one query, binding the local id (as text) when given, and decodes every row.
    async fn run(&self, sql: &str, local_id: Option<&str>) -> Result<Vec<Columns>, AdapterError> {
        macro_rules! run_on {
            ($pool:expr, $decode:expr) => {{
                let mut query = sqlx::query(sql);
                if let Some(id) = local_id {
                    query = query.bind(id);
                }
                let rows = query
                    .fetch_all($pool)
                    .await
                    .map_err(|e| self.driver.error(e, self.acquire_timeout))?;
                rows.iter().map(|row| columns(row, $decode)).collect()
            }};
        }
        match &self.pool {
            Pool::Postgres(pool) => run_on!(pool, pg_value),
            Pool::MySql(pool) => run_on!(pool, mysql_value),
            Pool::Sqlite(pool) => run_on!(pool, sqlite_value),
        }
    }
}

#[async_trait]
impl Adapter for SqlAdapter {
    async fn list(&self) -> Result<Option<Vec<SourceRecord>>, AdapterError> {
        let rows = self.run(&self.config.list, None).await?;
        if let Some(first) = rows.first() {
            if !first
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("local_id"))
            {
                return Err(AdapterError::Config(
                    "the list query returns no local_id column".into(),
                ));
            }
        }
        let total = rows.len();
        let records: Vec<SourceRecord> = rows.into_iter().filter_map(list_record).collect();
        if records.len() < total {
            // Counted, not itemised: the rows hold personal data.
            tracing::warn!(
                skipped = total - records.len(),
                "list rows with a null local_id were skipped"
            );
        }
        tracing::debug!(count = records.len(), "SQL list");
        Ok(Some(records))
    }

    /// A reporting database has no search of its own to trust, so a probe is answered by
    /// identifier equality over [`Adapter::list`]; demographics alone find nothing. Linking on
    /// demographics is the master child index's job, with its scores and review queue.
    async fn find(&self, probe: &Probe) -> Result<Vec<SourceRecord>, AdapterError> {
        if probe.identifiers.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .list()
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.matches_identifiers(probe))
            .collect())
    }

    /// Runs every category query concurrently. `Ok(None)` when none of them returns a row: the
    /// source does not hold the record (with no queries configured there is nothing to ask, and
    /// the answer is an empty record).
    async fn fetch(&self, local_id: &str) -> Result<Option<Vec<Item>>, AdapterError> {
        let queries = &self.config.queries;
        let results =
            futures::future::try_join_all(queries.iter().map(|q| self.run(&q.sql, Some(local_id))))
                .await?;
        if !queries.is_empty() && results.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let mut items = Vec::new();
        for (query, rows) in queries.iter().zip(results) {
            match query.rows {
                Rows::One => {
                    if let Some(row) = rows.into_iter().next() {
                        items.extend(row.into_iter().map(|(column, value)| {
                            Item::new(query.category.as_str(), column, value)
                        }));
                    }
                }
                Rows::Many => {
                    let field = query.field.clone().unwrap_or_else(|| {
                        query
                            .category
                            .rsplit('.')
                            .next()
                            .unwrap_or(&query.category)
                            .to_owned()
                    });
                    let rows: Vec<Value> = rows
                        .into_iter()
                        .map(|row| Value::Object(row.into_iter().collect::<Map<_, _>>()))
                        .collect();
                    items.push(Item::new(query.category.as_str(), field, rows));
                }
            }
        }
        tracing::debug!(queries = queries.len(), items = items.len(), "SQL fetch");
        Ok(Some(items))
    }
}

/// Where a list query puts several values in one column (former names, former postcodes).
pub const LIST_SEPARATOR: char = ';';

/// A list row as a record (see [`SqlConfig::list`]); `None` when its local id is null.
fn list_record(row: Columns) -> Option<SourceRecord> {
    let mut local_id = None;
    let mut identifiers = Vec::new();
    let mut demographics = Demographics::default();
    let mut lines = Vec::new();
    let mut restricted = false;
    let many = |text: &Option<String>| -> Vec<String> {
        text.as_deref()
            .map(|t| address_lines(t.split(LIST_SEPARATOR)))
            .unwrap_or_default()
    };
    for (column, value) in row {
        let column = column.to_ascii_lowercase();
        let text = scalar_text(&value).filter(|t| !t.trim().is_empty());
        match column.as_str() {
            "local_id" => local_id = text,
            "given_name" => demographics.given_name = text,
            "family_name" => demographics.family_name = text,
            "birth_date" => demographics.birth_date = text,
            "sex" => demographics.sex = text,
            "postcode" => demographics.postcode = text,
            "middle_names" => demographics.middle_names = text,
            "former_family_names" => {
                for name in many(&text) {
                    demographics.add_former_family_name(&name);
                }
            }
            c if c.starts_with("address_line") => lines.extend(text),
            "address_json" => {
                if let Some(t) = &text {
                    let (json_lines, uprn) = ssd::address_json(t);
                    lines.extend(json_lines);
                    if let Some(u) = uprn {
                        demographics.add_household(household::UPRN, &u);
                    }
                }
            }
            "former_postcodes" => {
                demographics.former_addresses = many(&text)
                    .iter()
                    .filter_map(|p| Address::new([], Some(p)))
                    .collect();
            }
            "uprn" => demographics.add_household(household::UPRN, text.as_deref().unwrap_or("")),
            "household_phone" | "carer_phone" => {
                demographics.add_household(household::PHONE, text.as_deref().unwrap_or(""))
            }
            "carer_id" => {
                demographics.add_household(household::CARER, text.as_deref().unwrap_or(""))
            }
            "family_id" => {
                demographics.add_household(household::FAMILY, text.as_deref().unwrap_or(""))
            }
            // A restriction marker (NHS R/V, a refuge, a protected address): any one set
            // restricts the record.
            c if RESTRICTION_MARKERS.contains(&c) => restricted |= truthy(&value),
            _ => {
                if let Some(value) = text {
                    identifiers.push(Identifier::new(column, value));
                }
            }
        }
    }
    demographics.address_lines = address_lines(lines.iter().map(String::as_str));
    Some(SourceRecord {
        local_id: local_id?,
        identifiers,
        demographics,
        score: None,
        restricted,
    })
}

fn columns<R: Row>(
    row: &R,
    decode: fn(&R, usize) -> Result<Value, AdapterError>,
) -> Result<Columns, AdapterError> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| Ok((column.name().to_owned(), decode(row, i)?)))
        .collect()
}

/// What a column holds, judged from its SQL type name. The names of the three drivers overlap
/// enough for one table; the driver functions below handle what is peculiar to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    UnsignedInt,
    Float,
    Decimal,
    Text,
    Date,
    Time,
    DateTime,
    DateTimeUtc,
    Json,
    Bytes,
    Uuid,
    Other,
}

fn classify(type_name: &str) -> Kind {
    let name = type_name.to_ascii_uppercase();
    match name.as_str() {
        "BOOL" | "BOOLEAN" => Kind::Bool,
        "INT2" | "INT4" | "INT8" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "INTEGER"
        | "BIGINT" => Kind::Int,
        n if n.ends_with(" UNSIGNED") => Kind::UnsignedInt,
        "FLOAT4" | "FLOAT8" | "REAL" | "FLOAT" | "DOUBLE" => Kind::Float,
        "NUMERIC" | "DECIMAL" => Kind::Decimal,
        "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN" | "TINYTEXT"
        | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => Kind::Text,
        "DATE" => Kind::Date,
        "TIME" => Kind::Time,
        "TIMESTAMP" | "DATETIME" => Kind::DateTime,
        "TIMESTAMPTZ" => Kind::DateTimeUtc,
        "JSON" | "JSONB" => Kind::Json,
        "BYTEA" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BINARY" | "VARBINARY" => {
            Kind::Bytes
        }
        "UUID" => Kind::Uuid,
        _ => Kind::Other,
    }
}

/// Decodes a column as `kind` with whichever driver `R` belongs to; `None` when the value does
/// not decode that way (the caller then tries another reading or reports the type).
fn decode_as<'r, R>(row: &'r R, i: usize, kind: Kind) -> Option<Value>
where
    R: Row,
    usize: ColumnIndex<R>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    i16: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f32: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    NaiveDate: Decode<'r, R::Database> + Type<R::Database>,
    NaiveTime: Decode<'r, R::Database> + Type<R::Database>,
    NaiveDateTime: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
    Value: Decode<'r, R::Database> + Type<R::Database>,
{
    fn get<'r, T, R>(row: &'r R, i: usize) -> Option<T>
    where
        R: Row,
        usize: ColumnIndex<R>,
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        row.try_get::<T, usize>(i).ok()
    }
    match kind {
        Kind::Bool => get::<bool, R>(row, i).map(Value::Bool),
        // The widths are tried in turn because PostgreSQL decodes only the exact width.
        Kind::Int => get::<i64, R>(row, i)
            .or_else(|| get::<i32, R>(row, i).map(i64::from))
            .or_else(|| get::<i16, R>(row, i).map(i64::from))
            .map(Value::from),
        Kind::Float => get::<f64, R>(row, i)
            .or_else(|| get::<f32, R>(row, i).map(f64::from))
            .map(float),
        Kind::Text => get::<String, R>(row, i).map(Value::String),
        Kind::Date => get::<NaiveDate, R>(row, i).map(|d| d.format("%Y-%m-%d").to_string().into()),
        Kind::Time => {
            get::<NaiveTime, R>(row, i).map(|t| t.format("%H:%M:%S%.f").to_string().into())
        }
        Kind::DateTime => get::<NaiveDateTime, R>(row, i)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.f").to_string().into())
            .or_else(|| decode_as(row, i, Kind::DateTimeUtc)),
        Kind::DateTimeUtc => get::<DateTime<Utc>, R>(row, i)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into()),
        Kind::Json => get::<Value, R>(row, i),
        Kind::Bytes => get::<Vec<u8>, R>(row, i).map(bytes),
        Kind::UnsignedInt | Kind::Decimal | Kind::Uuid | Kind::Other => None,
    }
}

/// JSON has no NaN or infinity; those are passed on as the text a database would print.
fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

/// Bytes as text when they are UTF-8 (MySQL reports text in a binary collation, such as
/// MariaDB's JSON columns, as a blob), otherwise as `\x`-prefixed hex, as PostgreSQL prints them.
fn bytes(b: Vec<u8>) -> Value {
    match String::from_utf8(b) {
        Ok(s) => Value::String(s),
        Err(e) => {
            let hex: String = e.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
            Value::String(format!("\\x{hex}"))
        }
    }
}

fn unreadable(row: &impl Row, i: usize, type_name: &str) -> AdapterError {
    let column = row.columns().get(i).map(|c| c.name()).unwrap_or("?");
    AdapterError::Database(format!(
        "column `{column}` has type {type_name}, which the adapter cannot read; cast it to text in the query"
    ))
}

fn raw_error(e: sqlx::Error) -> AdapterError {
    AdapterError::Database(error_chain(&e))
}

fn pg_value(row: &PgRow, i: usize) -> Result<Value, AdapterError> {
    let raw = row.try_get_raw(i).map_err(raw_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_info = raw.type_info().into_owned();
    let name = type_info.name();
    // Only the simple-query protocol sends text; it never reaches here, but text is text.
    if raw.format() == PgValueFormat::Text {
        return raw
            .as_str()
            .map(Value::from)
            .map_err(|e| AdapterError::Database(e.to_string()));
    }
    let kind = classify(name);
    let value = match kind {
        Kind::Decimal => raw.as_bytes().ok().and_then(pg_numeric).map(Value::String),
        Kind::Uuid => raw.as_bytes().ok().and_then(uuid_text).map(Value::String),
        // An enum's binary form is its label.
        _ if matches!(type_info.kind(), PgTypeKind::Enum(_)) => raw.as_str().ok().map(Value::from),
        _ => decode_as(row, i, kind),
    };
    value.ok_or_else(|| unreadable(row, i, name))
}

fn mysql_value(row: &MySqlRow, i: usize) -> Result<Value, AdapterError> {
    let raw = row.try_get_raw(i).map_err(raw_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let name = row.columns()[i].type_info().name();
    let value = match name {
        // sqlx sets the session time zone to UTC, so TIMESTAMP values are UTC instants.
        "TIMESTAMP" => decode_as(row, i, Kind::DateTimeUtc),
        _ => match classify(name) {
            Kind::UnsignedInt => row.try_get::<u64, _>(i).ok().map(Value::from),
            // DECIMAL travels as its decimal text even in the binary protocol.
            Kind::Decimal => row.try_get_unchecked::<String, _>(i).ok().map(Value::from),
            Kind::Other => decode_as(row, i, Kind::Text),
            kind => decode_as(row, i, kind),
        },
    };
    value.ok_or_else(|| unreadable(row, i, name))
}

/// SQLite stores any value in any column, so the declared type is only a hint: when the value
/// does not decode as declared (a DATE column holding `22/10/2010`), it is read by its storage
/// class instead, as the source wrote it.
fn sqlite_value(row: &SqliteRow, i: usize) -> Result<Value, AdapterError> {
    let raw = row.try_get_raw(i).map_err(raw_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let stored = raw.type_info().name().to_owned();
    let declared = row.columns()[i].type_info().name();
    decode_as(row, i, classify(declared))
        .or_else(|| decode_as(row, i, classify(&stored)))
        .ok_or_else(|| unreadable(row, i, &stored))
}

/// PostgreSQL's binary NUMERIC as decimal text, keeping its scale (`12.50` stays `12.50`), so no
/// precision is lost on the way to JSON.
///
/// The format: digit count, weight (of the first base-10000 digit), sign, display scale, then
/// the base-10000 digits, all big-endian 16-bit.
fn pg_numeric(bytes: &[u8]) -> Option<String> {
    let word = |k: usize| -> Option<u16> {
        let b = bytes.get(2 * k..2 * k + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    }
    let digits: Vec<u16> = (0..ndigits).map(|k| word(4 + k)).collect::<Option<_>>()?;
    if digits.iter().any(|d| *d > 9999) {
        return None;
    }
    // The base-10000 digit at position `k` counted from the first one (weight `weight - k`).
    let digit = |k: i64| -> u16 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for k in 1..=weight {
            out.push_str(&format!("{:04}", digit(k)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut k = weight + 1;
        while fraction.len() < dscale {
            // With a negative weight the first groups come before the first digit: zeros.
            fraction.push_str(&format!("{:04}", digit(k)));
            k += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Some(out)
}

fn uuid_text(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 16 {
        return None;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's binary NUMERIC: ndigits, weight, sign, dscale, then base-10000 digits.
    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((digits.len() as u16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend(sign.to_be_bytes());
        out.extend(dscale.to_be_bytes());
        for d in digits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    #[test]
    fn pg_numeric_keeps_scale_and_sign() {
        let cases: &[(Vec<u8>, &str)] = &[
            (numeric(0, 0, 0, &[]), "0"),
            (numeric(0, 0, 2, &[]), "0.00"),
            (numeric(0, 0, 2, &[87, 5000]), "87.50"),
            (numeric(0, 0x4000, 2, &[12, 3400]), "-12.34"),
            (numeric(-1, 0x4000, 2, &[500]), "-0.05"),
            (numeric(-1, 0, 4, &[1]), "0.0001"),
            (numeric(-2, 0, 6, &[1200]), "0.000012"),
            (numeric(-2, 0, 8, &[12]), "0.00000012"),
            (numeric(1, 0, 0, &[10]), "100000"),
            (numeric(2, 0, 1, &[1, 2345, 6789, 5000]), "123456789.5"),
            (numeric(0, 0xC000, 0, &[]), "NaN"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(pg_numeric(bytes).as_deref(), Some(*expected));
        }
    }

    #[test]
    fn pg_numeric_rejects_malformed_input() {
        assert_eq!(pg_numeric(&[0, 1]), None);
        assert_eq!(pg_numeric(&numeric(0, 0x1234, 0, &[1])), None);
        assert_eq!(pg_numeric(&numeric(0, 0, 0, &[10000])), None);
        // Says two digits, carries one.
        let mut short = numeric(0, 0, 0, &[1]);
        short[1] = 2;
        assert_eq!(pg_numeric(&short), None);
    }

    #[test]
    fn uuid_text_is_hyphenated_lowercase() {
        let bytes: Vec<u8> = (0..16).collect();
        assert_eq!(
            uuid_text(&bytes).as_deref(),
            Some("00010203-0405-0607-0809-0a0b0c0d0e0f")
        );
        assert_eq!(uuid_text(&bytes[..15]), None);
    }

    #[test]
    fn bytes_are_text_when_utf8_else_hex() {
        assert_eq!(bytes(b"{\"a\":1}".to_vec()), Value::from("{\"a\":1}"));
        assert_eq!(bytes(vec![0x01, 0xff]), Value::from("\\x01ff"));
    }

    #[test]
    fn type_names_of_all_three_drivers() {
        assert_eq!(classify("INT4"), Kind::Int);
        assert_eq!(classify("MEDIUMINT"), Kind::Int);
        assert_eq!(classify("BIGINT UNSIGNED"), Kind::UnsignedInt);
        assert_eq!(classify("boolean"), Kind::Bool);
        assert_eq!(classify("NUMERIC"), Kind::Decimal);
        assert_eq!(classify("TIMESTAMPTZ"), Kind::DateTimeUtc);
        assert_eq!(classify("DATETIME"), Kind::DateTime);
        assert_eq!(classify("LONGBLOB"), Kind::Bytes);
        assert_eq!(classify("INTERVAL"), Kind::Other);
    }

    #[test]
    fn list_rows_become_records() {
        let row = |cols: &[(&str, Value)]| -> Columns {
            cols.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        let record = list_record(row(&[
            ("LOCAL_ID", Value::from(7)),
            ("NHS_Number", Value::from("9912003888")),
            ("upn", Value::Null),
            ("police_person_id", Value::from("  ")),
            ("Birth_Date", Value::from("2011-03-04")),
        ]))
        .unwrap();
        assert_eq!(record.local_id, "7");
        assert_eq!(
            record.identifiers,
            vec![Identifier::new("nhs_number", "9912003888")]
        );
        assert_eq!(
            record.demographics.birth_date.as_deref(),
            Some("2011-03-04")
        );
        assert_eq!(list_record(row(&[("local_id", Value::Null)])), None);
        assert!(!record.restricted);
        // Any restriction marker set restricts the record, and is not an identifier.
        for (column, value, restricted) in [
            ("protected_address", Value::from(1), true),
            ("Refuge", Value::from("Y"), true),
            ("restricted", Value::Bool(true), true),
            ("restricted", Value::from("no"), false),
            ("refuge", Value::from(0), false),
            ("protected_address", Value::Null, false),
        ] {
            let r = list_record(row(&[("local_id", Value::from("a")), (column, value)])).unwrap();
            assert_eq!(r.restricted, restricted, "{column}");
            assert!(r.identifiers.is_empty(), "{column}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = SqlConfig {
            url: "mariadb://weft:s3cret@db.example:3306/reporting".into(),
            max_connections: 1,
            ..SqlConfig::preset("", Preset::Ssd)
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.example"), "{shown}");
        assert_eq!(url_without_password("sqlite://weft.db"), "sqlite://weft.db");
        assert_eq!(url_without_password("postgres://u:p@[bad"), "***");
    }

    #[test]
    fn max_connections_zero_is_a_configuration_error() {
        let config = SqlConfig {
            list: "SELECT 1 AS local_id".into(),
            max_connections: 0,
            preset: None,
            ..SqlConfig::preset("sqlite::memory:", Preset::Ssd)
        };
        assert!(matches!(
            SqlAdapter::new(config),
            Err(AdapterError::Config(_))
        ));
    }
}
