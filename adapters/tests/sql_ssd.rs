//! The `ssd` preset against reporting databases in the shape of the Standard Safeguarding
//! Dataset, created here on real PostgreSQL and MariaDB (and SQLite): the configuration is a
//! connection string and `preset = "ssd"`, nothing else.
//!
//! PostgreSQL and MariaDB need `WEFT_TEST_POSTGRES_URL` / `WEFT_TEST_MARIADB_URL`; without them
//! those tests say so on stderr and pass without running.

use serde_json::{json, Value};
use tempfile::TempDir;
use weft_adapters::sql::{Preset, Rows, SqlAdapter, SqlConfig, SqlQuery};
use weft_adapters::testkit::{fresh_mariadb, fresh_postgres, fresh_sqlite, FreshDb};
use weft_adapters::{Adapter, AdapterConfig, Identifier, Item, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    MariaDb,
    Sqlite,
}

async fn fresh(dialect: Dialect) -> Option<(FreshDb, Option<TempDir>)> {
    Some(match dialect {
        Dialect::Postgres => (fresh_postgres().await?, None),
        Dialect::MariaDb => (fresh_mariadb().await?, None),
        Dialect::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (fresh_sqlite(dir.path()), Some(dir))
        }
    })
}

/// The SSD tables Weft reads, with the SSD's column names and types (NVARCHAR as VARCHAR,
/// DATETIME as each database spells it), and a few extra columns the preset must ignore.
fn ssd_tables(dialect: Dialect, prefix: &str) -> String {
    let dt = match dialect {
        Dialect::Postgres => "TIMESTAMP",
        Dialect::MariaDb | Dialect::Sqlite => "DATETIME",
    };
    format!(
        "CREATE TABLE {prefix}ssd_person (
            pers_legacy_id VARCHAR(48),
            pers_person_id VARCHAR(48) PRIMARY KEY,
            pers_upn VARCHAR(13),
            pers_forename VARCHAR(100),
            pers_surname VARCHAR(255),
            pers_sex VARCHAR(20),
            pers_gender VARCHAR(10),
            pers_ethnicity VARCHAR(48),
            pers_dob {dt},
            pers_common_child_id VARCHAR(48),
            pers_upn_unknown VARCHAR(6),
            pers_send_flag CHAR(5),
            pers_expected_dob {dt},
            pers_death_date {dt},
            pers_is_mother CHAR(1),
            pers_nationality VARCHAR(48)
        );
        CREATE TABLE {prefix}ssd_linked_identifiers (
            link_table_id VARCHAR(48) PRIMARY KEY,
            link_person_id VARCHAR(48),
            link_identifier_type VARCHAR(100),
            link_identifier_value VARCHAR(100),
            link_valid_from_date {dt},
            link_valid_to_date {dt}
        );
        CREATE TABLE {prefix}ssd_address (
            addr_table_id VARCHAR(48) PRIMARY KEY,
            addr_person_id VARCHAR(48),
            addr_address_type VARCHAR(48),
            addr_address_start_date {dt},
            addr_address_end_date {dt},
            addr_address_postcode VARCHAR(15),
            addr_address_json VARCHAR(1000)
        );
        CREATE TABLE {prefix}ssd_family (
            fami_table_id VARCHAR(48) PRIMARY KEY,
            fami_family_id VARCHAR(48),
            fami_person_id VARCHAR(48)
        );
        CREATE TABLE {prefix}ssd_mother (
            moth_table_id VARCHAR(48) PRIMARY KEY,
            moth_person_id VARCHAR(48),
            moth_childs_person_id VARCHAR(48),
            moth_childs_dob {dt}
        );
        CREATE TABLE {prefix}ssd_cin_episodes (
            cine_referral_id VARCHAR(48) PRIMARY KEY,
            cine_person_id VARCHAR(48),
            cine_referral_date {dt},
            cine_cin_primary_need_code VARCHAR(3),
            cine_referral_source_code VARCHAR(48),
            cine_referral_nfa CHAR(1),
            cine_close_reason VARCHAR(100),
            cine_close_date {dt},
            cine_referral_team VARCHAR(48),
            cine_referral_worker_id VARCHAR(100)
        );
        CREATE TABLE {prefix}ssd_cp_plans (
            cppl_cp_plan_id VARCHAR(48) PRIMARY KEY,
            cppl_referral_id VARCHAR(48),
            cppl_icpc_id VARCHAR(48),
            cppl_person_id VARCHAR(48),
            cppl_cp_plan_start_date {dt},
            cppl_cp_plan_end_date {dt},
            cppl_cp_plan_ola CHAR(1),
            cppl_cp_plan_initial_category VARCHAR(100),
            cppl_cp_plan_latest_category VARCHAR(100)
        );
        CREATE TABLE {prefix}ssd_cla_episodes (
            clae_cla_episode_id VARCHAR(48) PRIMARY KEY,
            clae_person_id VARCHAR(48),
            clae_cla_placement_id VARCHAR(48),
            clae_cla_episode_start_date {dt},
            clae_cla_episode_start_reason VARCHAR(100),
            clae_cla_primary_need_code VARCHAR(3),
            clae_cla_episode_ceased {dt},
            clae_cla_episode_ceased_reason VARCHAR(255),
            clae_cla_id VARCHAR(48),
            clae_referral_id VARCHAR(48)
        );
        CREATE TABLE {prefix}ssd_professionals (
            prof_professional_id VARCHAR(48) PRIMARY KEY,
            prof_staff_id VARCHAR(48),
            prof_professional_name VARCHAR(300),
            prof_social_worker_registration_no VARCHAR(48),
            prof_agency_worker_flag CHAR(1),
            prof_professional_job_title VARCHAR(500)
        );
        CREATE TABLE {prefix}ssd_involvements (
            invo_involvements_id VARCHAR(48) PRIMARY KEY,
            invo_professional_id VARCHAR(48),
            invo_professional_role_id VARCHAR(200),
            invo_professional_team VARCHAR(1000),
            invo_person_id VARCHAR(48),
            invo_involvement_start_date {dt},
            invo_involvement_end_date {dt},
            invo_worker_change_reason VARCHAR(200),
            invo_referral_id VARCHAR(48)
        );

        -- P001: everything on the person row; an old address and a current one; one closed CIN
        -- episode, an open CP plan; two workers, the first no longer involved.
        -- P002: identifiers only in the linked-identifiers table; the SSD_PH sex placeholder
        -- with a gender code; looked after; no worker.
        -- P003: the bare minimum.
        INSERT INTO {prefix}ssd_person (pers_person_id, pers_upn, pers_forename, pers_surname,
            pers_sex, pers_gender, pers_ethnicity, pers_dob, pers_common_child_id) VALUES
            ('P001', 'B801200005001', 'Amy', 'Bloggs', 'F', '02', 'WBRI',
             '2011-03-04 00:00:00', '9912003888'),
            ('P002', NULL, 'Ben', 'Bloggs', 'SSD_PH', '01', 'NOBT',
             '2013-07-08 00:00:00', ''),
            ('P003', NULL, NULL, NULL, 'U', NULL, NULL, NULL, NULL);
        INSERT INTO {prefix}ssd_linked_identifiers VALUES
            ('L1', 'P002', 'NHS Number', '9434765919', '2020-01-01 00:00:00', NULL),
            ('L2', 'P002', 'Unique Pupil Number', 'P207000016049', NULL, NULL),
            ('L3', 'P001', 'NHS Number', '9434765870', NULL, NULL),
            ('L4', 'P002', 'Case Number', 'C-77', NULL, NULL);
        INSERT INTO {prefix}ssd_address VALUES
            ('A1', 'P001', 'HOME', '2015-01-01 00:00:00', '2022-12-31 00:00:00', 'ZZ9 9ZZ', NULL),
            ('A2', 'P001', 'HOME', '2023-01-01 00:00:00', NULL, 'AB1 2CD',
             '{{\"ROOM\": \"\", \"FLAT\": \"\", \"BUILDING\": \"\", \"HOUSE\": \"12\",
               \"STREET\": \"High Street\", \"TOWN\": \"Leeds\", \"UPRN\": \"100023336956\"}}');
        INSERT INTO {prefix}ssd_family VALUES ('F1', 'FAM9', 'P001'), ('F2', 'FAM9', 'P002');
        INSERT INTO {prefix}ssd_mother VALUES ('M1', 'P900', 'P002', '2013-07-08 00:00:00');
        INSERT INTO {prefix}ssd_cin_episodes (cine_referral_id, cine_person_id,
            cine_referral_date, cine_cin_primary_need_code, cine_close_date) VALUES
            ('R1', 'P001', '2023-05-01 09:30:00', 'N1', '2023-09-30 00:00:00');
        INSERT INTO {prefix}ssd_cp_plans (cppl_cp_plan_id, cppl_person_id,
            cppl_cp_plan_start_date, cppl_cp_plan_end_date, cppl_cp_plan_latest_category) VALUES
            ('CP1', 'P001', '2024-02-01 00:00:00', NULL, 'NEG');
        INSERT INTO {prefix}ssd_cla_episodes (clae_cla_episode_id, clae_person_id,
            clae_cla_episode_start_date, clae_cla_primary_need_code, clae_cla_episode_ceased)
            VALUES ('E1', 'P002', '2024-06-10 00:00:00', 'N2', NULL);
        INSERT INTO {prefix}ssd_professionals (prof_professional_id, prof_professional_name)
            VALUES ('W1', 'Sam Social'), ('W2', 'Kim Keyworker');
        INSERT INTO {prefix}ssd_involvements (invo_involvements_id, invo_professional_id,
            invo_professional_role_id, invo_professional_team, invo_person_id,
            invo_involvement_start_date, invo_involvement_end_date) VALUES
            ('I1', 'W1', 'ALLOCATED_CASE_WORKER', 'Team North', 'P001',
             '2023-05-02 00:00:00', '2024-01-31 00:00:00'),
            ('I2', 'W2', 'ALLOCATED_CASE_WORKER', 'Team South', 'P001',
             '2024-02-01 00:00:00', NULL);"
    )
}

fn value<'a>(items: &'a [Item], category: &str, field: &str) -> &'a Value {
    &items
        .iter()
        .find(|i| i.category == category && i.field == field)
        .unwrap_or_else(|| panic!("{category}.{field} in {items:?}"))
        .value
}

async fn ssd_preset(dialect: Dialect, schema: Option<&str>) {
    let Some((db, _dir)) = fresh(dialect).await else {
        return;
    };
    let prefix = match schema {
        Some(s) => {
            db.execute(&format!("CREATE SCHEMA {s}")).await.unwrap();
            format!("{s}.")
        }
        None => String::new(),
    };
    db.execute(&ssd_tables(dialect, &prefix)).await.unwrap();

    // What an administrator writes, read through the configuration type.
    let toml = format!(
        "kind = \"sql\"\nurl = {:?}\npreset = \"ssd\"\n{}",
        db.url,
        schema
            .map(|s| format!("schema = {s:?}\n"))
            .unwrap_or_default()
    );
    let config: AdapterConfig = toml::from_str(&toml).unwrap();
    let AdapterConfig::Sql(sql) = &config else {
        panic!("sql config")
    };
    assert_eq!(sql.preset, Some(Preset::Ssd));
    let a = config.build().unwrap();

    let records = a.list().await.unwrap().unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.local_id.as_str()).collect();
    assert_eq!(ids, ["P001", "P002", "P003"]);
    let amy = &records[0];
    assert_eq!(
        amy.identifiers,
        vec![
            Identifier::new("nhs_number", "9912003888"),
            Identifier::new("upn", "B801200005001"),
        ],
        "the person row's identifiers win over linked ones"
    );
    assert_eq!(amy.demographics.given_name.as_deref(), Some("Amy"));
    assert_eq!(amy.demographics.family_name.as_deref(), Some("Bloggs"));
    assert_eq!(amy.demographics.birth_date.as_deref(), Some("2011-03-04"));
    assert_eq!(amy.demographics.sex.as_deref(), Some("female"));
    assert_eq!(amy.demographics.postcode.as_deref(), Some("AB1 2CD"));
    assert_eq!(amy.demographics.address_lines, ["12 High Street", "Leeds"]);
    assert_eq!(
        amy.demographics.former_addresses,
        vec![weft_adapters::record::Address {
            lines: vec![],
            postcode: Some("ZZ9 9ZZ".into())
        }]
    );
    assert_eq!(
        amy.demographics.household,
        ["uprn:100023336956", "family:FAM9"],
        "the current address's UPRN and the SSD family"
    );
    let ben = &records[1];
    assert_eq!(
        ben.identifiers,
        vec![
            Identifier::new("nhs_number", "9434765919"),
            Identifier::new("upn", "P207000016049"),
        ],
        "identifiers from ssd_linked_identifiers"
    );
    assert_eq!(ben.demographics.sex.as_deref(), Some("male"), "from gender");
    assert_eq!(ben.demographics.postcode, None);
    assert_eq!(ben.demographics.household, ["family:FAM9", "carer:P900"]);
    assert!(ben.demographics.former_addresses.is_empty());
    assert!(records[2].identifiers.is_empty());
    assert_eq!(
        records[2].demographics.sex, None,
        "U is unknown, not guessed"
    );

    // Found by a linked identifier.
    let probe = Probe {
        identifiers: vec![Identifier::new("nhs_number", "9434765919")],
        ..Probe::default()
    };
    let found = a.find(&probe).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].local_id, "P002");

    let items = a.fetch("P001").await.unwrap().unwrap();
    assert_eq!(value(&items, "identity.core", "given_name"), &json!("Amy"));
    assert_eq!(
        value(&items, "identity.core", "birth_date"),
        &json!("2011-03-04")
    );
    assert_eq!(
        value(&items, "identity.contact", "postcode"),
        &json!("AB1 2CD")
    );
    assert_eq!(
        value(&items, "social_care.status", "episodes"),
        &json!([
            {"kind": "child_in_need", "category": "N1", "start_date": "2023-05-01",
             "end_date": "2023-09-30", "reference": "R1"},
            {"kind": "child_protection", "category": "NEG", "start_date": "2024-02-01",
             "end_date": null, "reference": "CP1"},
        ])
    );
    assert_eq!(
        value(&items, "social_care.allocated_worker", "worker"),
        &json!("Kim Keyworker"),
        "the open involvement, not the ended one"
    );
    assert_eq!(
        value(&items, "social_care.allocated_worker", "team"),
        &json!("Team South")
    );
    assert_eq!(
        value(&items, "social_care.allocated_worker", "since"),
        &json!("2024-02-01")
    );

    let items = a.fetch("P002").await.unwrap().unwrap();
    assert_eq!(
        value(&items, "social_care.status", "episodes"),
        &json!([{"kind": "looked_after", "category": "N2", "start_date": "2024-06-10",
                 "end_date": null, "reference": "E1"}])
    );
    assert!(
        !items
            .iter()
            .any(|i| i.category == "social_care.allocated_worker"),
        "no worker, no item: {items:?}"
    );

    assert_eq!(a.fetch("P404").await.unwrap(), None, "not held");
    db.drop_db().await.unwrap();
}

/// A preset's queries can be added to (the LA's own case-notes view) and its list replaced.
async fn preset_extended(dialect: Dialect) {
    let Some((db, _dir)) = fresh(dialect).await else {
        return;
    };
    db.execute(&ssd_tables(dialect, "")).await.unwrap();
    db.execute(
        "CREATE TABLE la_case_notes (person_id VARCHAR(48), note VARCHAR(200));
         INSERT INTO la_case_notes VALUES ('P001', 'Home visit.');",
    )
    .await
    .unwrap();
    let p = if dialect == Dialect::Postgres {
        "$1"
    } else {
        "?"
    };
    let config = SqlConfig {
        list: "SELECT pers_person_id AS local_id FROM ssd_person WHERE pers_person_id <> 'P003'"
            .into(),
        queries: vec![SqlQuery {
            category: "social_care.case_notes".into(),
            sql: format!("SELECT note FROM la_case_notes WHERE person_id = {p}"),
            rows: Rows::Many,
            field: Some("notes".into()),
        }],
        ..SqlConfig::preset(db.url.clone(), Preset::Ssd)
    };
    let a = SqlAdapter::new(config).unwrap();
    assert_eq!(a.list().await.unwrap().unwrap().len(), 2, "own list");
    let items = a.fetch("P001").await.unwrap().unwrap();
    assert_eq!(
        value(&items, "social_care.case_notes", "notes"),
        &json!([{"note": "Home visit."}])
    );
    assert_eq!(
        value(&items, "social_care.allocated_worker", "worker"),
        &json!("Kim Keyworker")
    );
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn postgres_ssd_preset() {
    ssd_preset(Dialect::Postgres, None).await
}

#[tokio::test]
async fn postgres_ssd_preset_in_its_own_schema() {
    ssd_preset(Dialect::Postgres, Some("ssd_development")).await
}

#[tokio::test]
async fn mariadb_ssd_preset() {
    ssd_preset(Dialect::MariaDb, None).await
}

#[tokio::test]
async fn sqlite_ssd_preset() {
    ssd_preset(Dialect::Sqlite, None).await
}

#[tokio::test]
async fn postgres_ssd_preset_extended() {
    preset_extended(Dialect::Postgres).await
}

#[tokio::test]
async fn mariadb_ssd_preset_extended() {
    preset_extended(Dialect::MariaDb).await
}

#[test]
fn a_bad_schema_name_or_a_missing_list_is_a_configuration_error() {
    let bad = SqlConfig {
        schema: Some("x; DROP TABLE ssd_person".into()),
        ..SqlConfig::preset("sqlite::memory:", Preset::Ssd)
    };
    assert!(SqlAdapter::new(bad).is_err());
    let no_list = SqlConfig {
        preset: None,
        ..SqlConfig::preset("sqlite::memory:", Preset::Ssd)
    };
    assert!(SqlAdapter::new(no_list).is_err());
}
