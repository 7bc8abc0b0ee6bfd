//! A ready mapping for a case system's reporting database in the shape of the Standard
//! Safeguarding Dataset (SSD, data-to-insight/ssd-data-model): with `preset = "ssd"` an LA
//! points Weft at its SSD tables with a connection string and nothing else.
//!
//! Tables read (the SSD's own names; all keyed by the person id as text):
//!
//! - `ssd_person`: `pers_person_id`, `pers_upn`, `pers_forename`, `pers_surname`, `pers_sex`,
//!   `pers_gender`, `pers_dob`, `pers_common_child_id` (the NHS number).
//! - `ssd_linked_identifiers`: `link_person_id`, `link_identifier_type`,
//!   `link_identifier_value` — NHS numbers and UPNs recorded here are used where the person
//!   row has none (`'NHS Number'`, `'Unique Pupil Number'`).
//! - `ssd_address`: `addr_person_id`, `addr_address_postcode`, `addr_address_json`,
//!   `addr_address_start_date`, `addr_address_end_date` — the current address (no end date,
//!   latest start), its lines and UPRN from the JSON; the postcodes of ended addresses.
//! - `ssd_family` (`fami_family_id`, `fami_person_id`) and `ssd_mother` (`moth_person_id`,
//!   `moth_childs_person_id`): the family and mother the case system records, as household
//!   keys for telling twins and siblings apart.
//! - `ssd_cin_episodes` (`cine_…`), `ssd_cp_plans` (`cppl_…`), `ssd_cla_episodes` (`clae_…`):
//!   child in need, child protection and looked-after episodes, as one list.
//! - `ssd_involvements` (`invo_…`) joined to `ssd_professionals` (`prof_…`): the allocated
//!   worker (the open involvement that started last).
//!
//! The SSD keeps dates as DATETIME; they are read as dates. Sex is read from `pers_sex`
//! (`M`/`F`), else from the `pers_gender` codes (`01`/`02`), as `male`/`female`; anything else
//! (`U`, the extract's `SSD_PH` placeholder) is left unknown rather than guessed.
//!
//! The same SQL runs on PostgreSQL, MariaDB/MySQL and SQLite; only the parameter marker and the
//! date conversion differ.

use super::{Driver, Rows, SqlQuery};

/// A schema (PostgreSQL) or database (MariaDB/MySQL) name: plain identifiers only, because it
/// is spliced into SQL text.
pub fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

struct Sql {
    driver: Driver,
    prefix: String,
}

impl Sql {
    fn table(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn param(&self) -> &'static str {
        match self.driver {
            Driver::Postgres => "$1",
            Driver::MySql | Driver::Sqlite => "?",
        }
    }

    /// A DATETIME column as a date. SQLite's `CAST(… AS DATE)` would give a number.
    fn date(&self, column: &str) -> String {
        match self.driver {
            Driver::Postgres | Driver::MySql => format!("CAST({column} AS DATE)"),
            Driver::Sqlite => format!("date({column})"),
        }
    }

    fn linked(&self, kind: &str) -> String {
        format!(
            "(SELECT MIN(li.link_identifier_value) FROM {t} li \
             WHERE li.link_person_id = p.pers_person_id AND li.link_identifier_type = '{kind}')",
            t = self.table("ssd_linked_identifiers")
        )
    }

    fn sex(&self) -> &'static str {
        "CASE WHEN UPPER(p.pers_sex) IN ('M', 'MALE') THEN 'male' \
         WHEN UPPER(p.pers_sex) IN ('F', 'FEMALE') THEN 'female' \
         WHEN p.pers_gender IN ('01', '1') THEN 'male' \
         WHEN p.pers_gender IN ('02', '2') THEN 'female' END"
    }

    fn postcode(&self) -> String {
        self.current_address("addr_address_postcode")
    }

    /// A column of the current address: no end date, latest start.
    fn current_address(&self, column: &str) -> String {
        format!(
            "(SELECT a.{column} FROM {t} a \
             WHERE a.addr_person_id = p.pers_person_id AND a.addr_address_end_date IS NULL \
             ORDER BY a.addr_address_start_date DESC LIMIT 1)",
            t = self.table("ssd_address")
        )
    }

    /// The postcodes of ended addresses, `;`-separated (most recent first where the database
    /// can order an aggregate).
    fn former_postcodes(&self) -> String {
        let from = format!(
            "FROM {t} a WHERE a.addr_person_id = p.pers_person_id \
             AND a.addr_address_end_date IS NOT NULL AND a.addr_address_postcode IS NOT NULL",
            t = self.table("ssd_address")
        );
        match self.driver {
            Driver::Postgres => format!(
                "(SELECT string_agg(a.addr_address_postcode, ';' \
                 ORDER BY a.addr_address_start_date DESC) {from})"
            ),
            Driver::MySql => format!(
                "(SELECT GROUP_CONCAT(a.addr_address_postcode \
                 ORDER BY a.addr_address_start_date DESC SEPARATOR ';') {from})"
            ),
            Driver::Sqlite => format!("(SELECT group_concat(a.addr_address_postcode, ';') {from})"),
        }
    }

    /// The SSD's family (`ssd_family`) and the child's mother (`ssd_mother`): the household keys
    /// a case system records.
    fn family(&self) -> String {
        format!(
            "(SELECT MIN(f.fami_family_id) FROM {t} f WHERE f.fami_person_id = p.pers_person_id)",
            t = self.table("ssd_family")
        )
    }

    fn mother(&self) -> String {
        format!(
            "(SELECT MIN(m.moth_person_id) FROM {t} m \
             WHERE m.moth_childs_person_id = p.pers_person_id)",
            t = self.table("ssd_mother")
        )
    }
}

/// The address lines and UPRN of an SSD address object (`addr_address_json`: `ROOM`, `FLOOR`,
/// `FLAT`, `BUILDING`, `HOUSE`, `STREET`, `TOWN`, `UPRN`, …, blank values as `""` or absent).
/// The house number goes in front of the street, as an address is written; a building name
/// equal to the house (some extracts fill both from one column) is kept once. Text that is not
/// a JSON object gives nothing.
pub fn address_json(text: &str) -> (Vec<String>, Option<String>) {
    let Ok(serde_json::Value::Object(a)) = serde_json::from_str::<serde_json::Value>(text) else {
        return (Vec::new(), None);
    };
    let get = |key: &str| {
        a.get(key)
            .and_then(crate::record::scalar_text)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut lines = Vec::new();
    for (key, label) in [("ROOM", "Room"), ("FLOOR", "Floor"), ("FLAT", "Flat")] {
        if let Some(v) = get(key) {
            // A bare number is labelled, so it is not read as the house number.
            if v.chars().all(|c| c.is_ascii_digit()) {
                lines.push(format!("{label} {v}"));
            } else {
                lines.push(v);
            }
        }
    }
    let house = get("HOUSE");
    if let Some(b) = get("BUILDING").filter(|b| Some(b) != house.as_ref()) {
        lines.push(b);
    }
    match (house, get("STREET")) {
        (Some(h), Some(s)) => lines.push(format!("{h} {s}")),
        (h, s) => lines.extend(h.into_iter().chain(s)),
    }
    lines.extend(get("TOWN"));
    (lines, get("UPRN"))
}

fn sql(driver: Driver, schema: Option<&str>) -> Sql {
    Sql {
        driver,
        prefix: schema.map(|s| format!("{s}.")).unwrap_or_default(),
    }
}

/// The list query: every person, with the identifiers and demographics the index links on.
pub fn list(driver: Driver, schema: Option<&str>) -> String {
    let s = sql(driver, schema);
    format!(
        "SELECT p.pers_person_id AS local_id, \
         COALESCE(NULLIF(p.pers_common_child_id, ''), {nhs}) AS nhs_number, \
         COALESCE(NULLIF(p.pers_upn, ''), {upn}) AS upn, \
         p.pers_forename AS given_name, p.pers_surname AS family_name, \
         {dob} AS birth_date, {sex} AS sex, {postcode} AS postcode, \
         {address} AS address_json, {former} AS former_postcodes, \
         {family} AS family_id, {mother} AS carer_id \
         FROM {person} p ORDER BY p.pers_person_id",
        nhs = s.linked("NHS Number"),
        upn = s.linked("Unique Pupil Number"),
        dob = s.date("p.pers_dob"),
        sex = s.sex(),
        postcode = s.postcode(),
        address = s.current_address("addr_address_json"),
        former = s.former_postcodes(),
        family = s.family(),
        mother = s.mother(),
        person = s.table("ssd_person"),
    )
}

/// One query per data category, each taking the person id.
pub fn queries(driver: Driver, schema: Option<&str>) -> Vec<SqlQuery> {
    let s = sql(driver, schema);
    let p = s.param();
    let person = s.table("ssd_person");
    let one = |category: &str, sql: String| SqlQuery {
        category: category.into(),
        sql,
        rows: Rows::One,
        field: None,
    };
    vec![
        one(
            "identity.core",
            format!(
                "SELECT p.pers_forename AS given_name, p.pers_surname AS family_name, \
                 {dob} AS birth_date, {sex} AS sex FROM {person} p WHERE p.pers_person_id = {p}",
                dob = s.date("p.pers_dob"),
                sex = s.sex(),
            ),
        ),
        one(
            "identity.contact",
            format!(
                "SELECT {postcode} AS postcode FROM {person} p WHERE p.pers_person_id = {p}",
                postcode = s.postcode(),
            ),
        ),
        SqlQuery {
            category: "social_care.status".into(),
            // The id is bound once (MySQL's `?` cannot be repeated), so the three episode
            // tables are unioned first and filtered once.
            sql: format!(
                "SELECT e.kind, e.category, e.start_date, e.end_date, e.reference FROM ( \
                 SELECT 'child_in_need' AS kind, c.cine_person_id AS person_id, \
                 c.cine_cin_primary_need_code AS category, {cin_start} AS start_date, \
                 {cin_end} AS end_date, c.cine_referral_id AS reference FROM {cin} c \
                 UNION ALL \
                 SELECT 'child_protection', cp.cppl_person_id, cp.cppl_cp_plan_latest_category, \
                 {cp_start}, {cp_end}, cp.cppl_cp_plan_id FROM {cpp} cp \
                 UNION ALL \
                 SELECT 'looked_after', la.clae_person_id, la.clae_cla_primary_need_code, \
                 {la_start}, {la_end}, la.clae_cla_episode_id FROM {cla} la \
                 ) e WHERE e.person_id = {p} ORDER BY e.start_date, e.kind",
                cin = s.table("ssd_cin_episodes"),
                cpp = s.table("ssd_cp_plans"),
                cla = s.table("ssd_cla_episodes"),
                cin_start = s.date("c.cine_referral_date"),
                cin_end = s.date("c.cine_close_date"),
                cp_start = s.date("cp.cppl_cp_plan_start_date"),
                cp_end = s.date("cp.cppl_cp_plan_end_date"),
                la_start = s.date("la.clae_cla_episode_start_date"),
                la_end = s.date("la.clae_cla_episode_ceased"),
            ),
            rows: Rows::Many,
            field: Some("episodes".into()),
        },
        one(
            "social_care.allocated_worker",
            format!(
                "SELECT pr.prof_professional_name AS worker, i.invo_professional_team AS team, \
                 i.invo_professional_role_id AS role, {since} AS since \
                 FROM {invo} i JOIN {prof} pr ON pr.prof_professional_id = i.invo_professional_id \
                 WHERE i.invo_person_id = {p} AND i.invo_involvement_end_date IS NULL \
                 ORDER BY i.invo_involvement_start_date DESC LIMIT 1",
                since = s.date("i.invo_involvement_start_date"),
                invo = s.table("ssd_involvements"),
                prof = s.table("ssd_professionals"),
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssd_address_objects_become_lines() {
        let (lines, uprn) = address_json(
            r#"{"ROOM": "", "FLOOR": "", "FLAT": "2", "BUILDING": "Mill House",
                "HOUSE": "5", "STREET": "High Street", "TOWN": "Leeds",
                "UPRN": "123456789012", "EASTING": "", "NORTHING": ""}"#,
        );
        assert_eq!(lines, ["Flat 2", "Mill House", "5 High Street", "Leeds"]);
        assert_eq!(uprn.as_deref(), Some("123456789012"));
        // The PostgreSQL extract fills BUILDING and HOUSE from one column; UPRN may be null.
        let (lines, uprn) =
            address_json(r#"{"BUILDING": "7", "HOUSE": "7", "STREET": "Lane End", "UPRN": null}"#);
        assert_eq!(lines, ["7 Lane End"]);
        assert_eq!(uprn, None);
        assert_eq!(address_json("not json"), (Vec::new(), None));
        assert_eq!(address_json("[1]"), (Vec::new(), None));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("ssd_development"));
        assert!(valid_schema("_x1"));
        assert!(!valid_schema(""));
        assert!(!valid_schema("1ssd"));
        assert!(!valid_schema("ssd; DROP TABLE x"));
        assert!(!valid_schema("a.b"));
    }

    #[test]
    fn each_query_binds_the_id_once_in_the_drivers_dialect() {
        for (driver, marker) in [
            (Driver::Postgres, "$1"),
            (Driver::MySql, "?"),
            (Driver::Sqlite, "?"),
        ] {
            for q in queries(driver, Some("ssd_development")) {
                assert_eq!(q.sql.matches(marker).count(), 1, "{driver:?}: {}", q.sql);
                assert!(q.sql.contains("ssd_development.ssd_"), "{}", q.sql);
            }
            assert!(!list(driver, None).contains(marker));
        }
    }
}
