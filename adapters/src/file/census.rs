//! School census / MIS exports as CSV: pupils on roll, termly attendance sessions, exclusions.
//!
//! MIS vendors and census years name the same column differently, so each value is looked up by
//! a list of accepted headers (compared without case, spaces or underscores). A pupil's record
//! is keyed by the MIS's own id when the export has one (`PupilID`, `AdmissionNumber`, …),
//! otherwise by the UPN as written, valid or not.

use serde_json::{json, Map, Value};

use super::{values, Batch, ImportError, Limits};
use crate::record::{address_lines, household, Demographics};

pub(crate) const ID: &[&str] = &[
    "pupilid",
    "misid",
    "admissionnumber",
    "admissionno",
    "adno",
    "upn",
];
const UPN: &[&str] = &["upn", "uniquepupilnumber"];
const FAMILY: &[&str] = &["legalsurname", "surname", "familyname", "lastname"];
const GIVEN: &[&str] = &["legalforename", "forename", "givenname", "firstname"];
const DOB: &[&str] = &["dob", "dateofbirth", "birthdate"];
const SEX: &[&str] = &["sex", "gender"];
const POSTCODE: &[&str] = &["postcode"];
const MIDDLE: &[&str] = &["middlenames", "middlename", "othernames"];
const FORMER_FAMILY: &[&str] = &[
    "formersurname",
    "formerfamilyname",
    "previoussurname",
    "previousfamilyname",
];
const FORMER_UPN: &[&str] = &["formerupn", "previousupn"];
/// Address columns in the order they are written: BS7656 names as the CTF and census use them,
/// then the "line 1…" style of other MIS exports.
const ADDRESS: &[&[&str]] = &[
    &["saon", "flat", "flatno"],
    &[
        "paon",
        "housename",
        "housenumber",
        "houseno",
        "housenameornumber",
    ],
    &["street", "addressline1", "address1"],
    &["locality", "addressline2", "address2"],
    &["addressline3", "address3"],
    &["town", "posttown", "addressline4", "address4"],
    &["county", "administrativearea", "addressline5", "address5"],
];
const UPRN: &[&str] = &["uprn", "uniquepropertyreferencenumber"];
/// A first parent or carer's telephone, as MIS exports name it.
const CARER_PHONE: &[&[&str]] = &[
    &[
        "contact1telephone",
        "contact1phone",
        "primarycontacttelephone",
        "primarycontactphone",
    ],
    &["contact2telephone", "contact2phone"],
    &["parentcarertelephone", "parenttelephone", "carertelephone"],
];

/// A CSV file with its header, read whole so that an error anywhere rejects it before any row
/// is used. Every row and value is held to `limits` as it is read.
pub(crate) struct Table<'a> {
    file: &'a str,
    columns: Vec<String>,
    rows: Vec<(usize, csv::StringRecord)>,
}

/// One row of a [`Table`], with its line for error messages.
pub(crate) struct Row<'t> {
    table: &'t Table<'t>,
    pub line: usize,
    record: &'t csv::StringRecord,
}

fn normalise(header: &str) -> String {
    header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl<'a> Table<'a> {
    pub fn read(file: &'a str, text: &'a str, limits: &Limits) -> Result<Table<'a>, ImportError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let fail = |line: usize, reason: String| ImportError::Malformed {
            file: file.to_string(),
            line,
            at: None,
            reason,
        };
        // The csv crate's own messages are positions and counts, but are replaced all the same:
        // the shape of a message that reaches the logs is decided here.
        let malformed = |e: csv::Error| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(1);
            let reason = match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!(
                    "{len} fields where the header has {expected_len}: truncated or corrupted row"
                ),
                csv::ErrorKind::Utf8 { .. } => "not UTF-8 text (save the export as UTF-8)".into(),
                _ => "unreadable CSV".into(),
            };
            fail(line, reason)
        };
        // Fields are named by position: in a damaged file the "header" may be data.
        let within = |line: usize, r: &csv::StringRecord| {
            if let Some(i) = r.iter().position(|f| f.len() > limits.field_bytes) {
                return Err(ImportError::Malformed {
                    file: file.to_string(),
                    line,
                    at: Some(format!("field {}", i + 1)),
                    reason: format!(
                        "value over the limit of {} bytes (limits.field_bytes)",
                        limits.field_bytes
                    ),
                });
            }
            let bytes = r.as_slice().len() + r.len().saturating_sub(1);
            if bytes > limits.record_bytes {
                return Err(fail(
                    line,
                    format!(
                        "row of {bytes} bytes, over the limit of {} bytes (limits.record_bytes)",
                        limits.record_bytes
                    ),
                ));
            }
            Ok(())
        };
        // A line is part of one row, so a line over the row limit is refused before the csv
        // reader buffers it: a 100 MB surname costs a scan, not the memory to hold it twice.
        if let Some((n, l)) = text
            .split('\n')
            .enumerate()
            .find(|(_, l)| l.len() > limits.record_bytes)
        {
            return Err(fail(
                n + 1,
                format!(
                    "line of {} bytes, over the limit of {} bytes (limits.record_bytes)",
                    l.len(),
                    limits.record_bytes
                ),
            ));
        }
        let header = reader.headers().map_err(malformed)?;
        within(1, header)?;
        let columns: Vec<String> = header.iter().map(normalise).collect();
        if columns.iter().all(String::is_empty) {
            return Err(fail(1, "no header row: empty file?".into()));
        }
        let mut rows = Vec::new();
        for r in reader.records() {
            let r = r.map_err(malformed)?;
            let line = r.position().map(|p| p.line() as usize).unwrap_or(0);
            within(line, &r)?;
            rows.push((line, r));
        }
        Ok(Table {
            file,
            columns,
            rows,
        })
    }

    fn index(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|n| self.columns.iter().position(|c| c == n))
    }

    /// Fails unless one of the names is a column, naming the first as the expected one.
    pub fn require(&self, names: &[&str]) -> Result<(), ImportError> {
        match self.index(names) {
            Some(_) => Ok(()),
            None => Err(ImportError::Malformed {
                file: self.file.into(),
                line: 1,
                at: Some(format!("column {}", names[0])),
                reason: format!("missing column (accepted headers: {})", names.join(", ")),
            }),
        }
    }

    pub fn rows(&'a self) -> impl Iterator<Item = Row<'a>> + 'a {
        self.rows.iter().map(move |(line, record)| Row {
            table: self,
            line: *line,
            record,
        })
    }

    pub fn has(&self, names: &[&str]) -> bool {
        self.index(names).is_some()
    }
}

impl Row<'_> {
    /// The trimmed value of the first of these columns present, if not blank.
    pub fn get(&self, names: &[&str]) -> Option<&str> {
        self.table
            .index(names)
            .and_then(|i| self.record.get(i))
            .filter(|v| !v.is_empty())
    }

    /// A value that must be present.
    pub fn need(&self, names: &[&str]) -> Result<&str, ImportError> {
        self.get(names)
            .ok_or_else(|| self.error(names, "empty value in a required column"))
    }

    /// A present value read with one of the [`values`] readers.
    pub fn parse<T>(
        &self,
        names: &[&str],
        read: impl Fn(&str) -> Result<T, &'static str>,
    ) -> Result<Option<T>, ImportError> {
        self.get(names)
            .map(|v| read(v).map_err(|reason| self.error(names, reason)))
            .transpose()
    }

    pub fn error(&self, names: &[&str], reason: impl Into<String>) -> ImportError {
        let column = self
            .table
            .index(names)
            .map(|i| self.table.columns[i].clone())
            .unwrap_or_else(|| names[0].to_string());
        ImportError::Malformed {
            file: self.table.file.into(),
            line: self.line,
            at: Some(format!("column {column}")),
            reason: reason.into(),
        }
    }
}

/// Pupils on roll: identity, enrolment and SEN provision.
pub fn pupils(
    file: &str,
    text: &str,
    limits: &Limits,
    batch: &mut Batch,
) -> Result<(), ImportError> {
    let table = Table::read(file, text, limits)?;
    table.require(ID)?;
    for row in table.rows() {
        let id = row.need(ID)?;
        let mut demographics = Demographics {
            given_name: row.get(GIVEN).map(String::from),
            family_name: row.get(FAMILY).map(String::from),
            birth_date: row.parse(DOB, values::date)?,
            sex: row.parse(SEX, values::sex)?.map(String::from),
            postcode: row.get(POSTCODE).map(String::from),
            middle_names: row.get(MIDDLE).map(String::from),
            address_lines: address_lines(ADDRESS.iter().filter_map(|names| row.get(names))),
            ..Demographics::default()
        };
        if let Some(f) = row.get(FORMER_FAMILY) {
            demographics.add_former_family_name(f);
        }
        if let Some(u) = row.get(UPRN) {
            demographics.add_household(household::UPRN, u);
        }
        for names in CARER_PHONE {
            if let Some(p) = row.get(names) {
                demographics.add_household(household::PHONE, p);
            }
        }
        let entry = row.parse(&["entrydate", "onrollfrom", "startdate"], values::date)?;
        let leaving = row.parse(&["leavingdate", "onrollto", "leavedate"], values::date)?;
        let year = row.get(&["ncyearactual", "yeargroup", "ncyear"]);
        let urn = row.get(&["urn", "schoolurn"]);
        let status = row.get(&["enrolstatus", "enrolmentstatus"]);
        let sen = row.get(&["senprovision", "sen", "sendstatus"]);
        let in_care = row.parse(&["incare", "lookedafter", "cla"], values::boolean)?;
        let d = batch.record(id);
        d.identifier("upn", row.get(UPN));
        d.identifier("former_upn", row.get(FORMER_UPN));
        d.demographics(demographics);
        if let Some(urn) = urn {
            d.set("education.enrolment", "school_urn", urn);
        }
        d.set("education.enrolment", "on_roll", leaving.is_none());
        if let Some(e) = entry {
            d.set("education.enrolment", "entry_date", e);
        }
        if let Some(l) = leaving {
            d.set("education.enrolment", "leaving_date", l);
        }
        if let Some(y) = year {
            d.set("education.enrolment", "year_group", year_value(y));
        }
        if let Some(s) = status {
            d.set("education.enrolment", "enrolment_status", s);
        }
        if let Some(s) = sen {
            d.set("education.send", "send_status", values::sen_provision(s));
        }
        if let Some(c) = in_care {
            d.set("social_care.status", "looked_after", c);
        }
    }
    Ok(())
}

/// Year groups are numbers except Reception (`R`), nursery (`N1`, `N2`) and `X`.
fn year_value(raw: &str) -> Value {
    raw.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| raw.into())
}

/// Termly attendance: possible sessions and absences, one row per pupil and term.
pub fn attendance(
    file: &str,
    text: &str,
    limits: &Limits,
    batch: &mut Batch,
) -> Result<(), ImportError> {
    const POSSIBLE: &[&str] = &["sessionspossible", "possiblesessions", "possible"];
    const AUTH: &[&str] = &[
        "sessionsauthorised",
        "authorisedabsence",
        "authorisedabsences",
        "authorised",
    ];
    const UNAUTH: &[&str] = &[
        "sessionsunauthorised",
        "unauthorisedabsence",
        "unauthorisedabsences",
        "unauthorised",
    ];
    const ATTENDED: &[&str] = &[
        "sessionsattended",
        "attendedsessions",
        "attended",
        "present",
    ];
    let table = Table::read(file, text, limits)?;
    table.require(ID)?;
    table.require(&["term", "termname", "period"])?;
    table.require(POSSIBLE)?;
    if !(table.has(ATTENDED) || (table.has(AUTH) && table.has(UNAUTH))) {
        table.require(ATTENDED)?;
    }
    for row in table.rows() {
        let id = row.need(ID)?;
        let term = row.need(&["term", "termname", "period"])?;
        let int = |names: &[&str]| row.parse(names, values::sessions);
        let possible = int(POSSIBLE)?.unwrap_or(0);
        let auth = int(AUTH)?;
        let unauth = int(UNAUTH)?;
        let attended = match int(ATTENDED)? {
            Some(a) => a,
            None => possible - auth.unwrap_or(0) - unauth.unwrap_or(0),
        };
        if attended < 0 || attended > possible {
            return Err(row.error(POSSIBLE, "more sessions attended than possible"));
        }
        let mut t = Map::new();
        t.insert("term".into(), term.into());
        t.insert("possible_sessions".into(), possible.into());
        t.insert("attended_sessions".into(), attended.into());
        if let Some(a) = auth {
            t.insert("authorised_absence".into(), a.into());
        }
        if let Some(u) = unauth {
            t.insert("unauthorised_absence".into(), u.into());
        }
        let percent = if possible > 0 {
            (attended as f64 * 1000.0 / possible as f64).round() / 10.0
        } else {
            100.0
        };
        t.insert("attendance_percent".into(), json!(percent));
        let d = batch.record(id);
        d.identifier("upn", row.get(UPN));
        d.push("education.attendance", "terms", Value::Object(t));
    }
    Ok(())
}

/// Exclusions and suspensions. Older returns give one `Reason`; since 2021 there are up to
/// three (`Reason1`…`Reason3`), all kept in order.
pub fn exclusions(
    file: &str,
    text: &str,
    limits: &Limits,
    batch: &mut Batch,
) -> Result<(), ImportError> {
    const KIND: &[&str] = &["category", "exclusioncategory", "type", "exclusiontype"];
    const START: &[&str] = &["startdate", "exclusionstartdate", "date"];
    let table = Table::read(file, text, limits)?;
    table.require(ID)?;
    table.require(KIND)?;
    table.require(START)?;
    for row in table.rows() {
        let id = row.need(ID)?;
        let kind = row
            .parse(KIND, values::exclusion_kind)?
            .ok_or_else(|| row.error(KIND, "empty exclusion category"))?;
        let start = row
            .parse(START, values::date)?
            .ok_or_else(|| row.error(START, "empty start date"))?;
        let mut reasons: Vec<&str> = Vec::new();
        for names in [
            &["reason", "reason1", "exclusionreason", "exclusionreason1"][..],
            &["reason2", "exclusionreason2"],
            &["reason3", "exclusionreason3"],
        ] {
            if let Some(r) = row.get(names) {
                reasons.push(r);
            }
        }
        let mut e = Map::new();
        e.insert("kind".into(), kind.into());
        e.insert("start_date".into(), start.into());
        if let Some(s) = row.parse(&["sessions", "exclusionsessions"], values::number)? {
            e.insert("sessions".into(), s);
        }
        if let Some(days) = row.parse(&["days", "lengthdays", "actuallength"], values::number)? {
            e.insert("days".into(), days);
        }
        if let Some(first) = reasons.first() {
            e.insert("reason".into(), (*first).into());
        }
        e.insert("reasons".into(), json!(reasons));
        let d = batch.record(id);
        d.identifier("upn", row.get(UPN));
        d.push("education.exclusions", "exclusions", Value::Object(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse, DroppedFile, FileFormat};
    use super::*;

    fn drop(files: &[(FileFormat, &str)]) -> Result<super::super::Parsed, ImportError> {
        let files: Vec<DroppedFile> = files
            .iter()
            .enumerate()
            .map(|(i, (format, text))| DroppedFile {
                name: format!("f{i}.csv"),
                format: *format,
                bytes: text.as_bytes().to_vec(),
            })
            .collect();
        parse(&files, &super::super::Limits::default())
    }

    #[test]
    fn pupils_attendance_exclusions_join_and_drift() {
        let pupils =
            "UPN,Legal Surname,Legal Forename,DOB,Gender,Postcode,URN,NCyearActual,SENprovision\n\
                      B801200005001,Khan,Sara,27/03/2012,F,AB1 2CD,100001,8,K\n\
                      A801200005001,Smith,Jo,2013-01-02,1,,100001,R,N\n";
        let attendance = "UPN,Term,Sessions Possible,Authorised Absence,Unauthorised Absence\n\
                          B801200005001,Autumn 2024,140,4,10\n\
                          B801200005001,Spring 2025,120,0,0\n";
        let exclusions = "UPN,Category,StartDate,Sessions,Reason1,Reason2,Reason3\n\
                          B801200005001,FIXD,01/10/2024,4,PP,VP,\n\
                          A801200005001,SUSP,2024-11-05,2,DM,,\n";
        let old_exclusions = "upn,type,date,reason\nB801200005001,PERM,03/03/2025,BU\n";
        let parsed = drop(&[
            (FileFormat::CensusPupilsCsv, pupils),
            (FileFormat::CensusAttendanceCsv, attendance),
            (FileFormat::CensusExclusionsCsv, exclusions),
            (FileFormat::CensusExclusionsCsv, old_exclusions),
        ])
        .unwrap();
        assert_eq!(parsed.records.len(), 2);
        let sara = parsed
            .records
            .iter()
            .find(|r| r.record.local_id == "B801200005001")
            .unwrap();
        assert_eq!(
            sara.record.demographics.birth_date.as_deref(),
            Some("2012-03-27")
        );
        assert_eq!(sara.record.demographics.sex.as_deref(), Some("female"));
        let item = |field: &str| sara.items.iter().find(|i| i.field == field).unwrap();
        let terms = item("terms").value.as_array().unwrap();
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0]["attended_sessions"], 126);
        assert_eq!(terms[0]["attendance_percent"], 90.0);
        let ex = item("exclusions").value.as_array().unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0]["kind"], "suspension");
        assert_eq!(ex[0]["reasons"], json!(["PP", "VP"]));
        assert_eq!(ex[1]["kind"], "permanent");
        assert_eq!(ex[1]["reason"], "BU");
        assert_eq!(item("send_status").value, "SEN support");
        // The invalid UPN is passed on, not dropped; the index flags it.
        let jo = parsed
            .records
            .iter()
            .find(|r| r.record.local_id == "A801200005001")
            .unwrap();
        assert_eq!(jo.record.identifiers[0].value, "A801200005001");
        assert_eq!(jo.record.demographics.sex.as_deref(), Some("male"));
    }

    #[test]
    fn pupils_carry_middle_and_former_names_address_and_household() {
        let pupils = "Admission No,UPN,Former UPN,Legal Surname,Former Surname,Legal Forename,\
                      Middle Name(s),DOB,Gender,House Number,Street,Town,Postcode,UPRN,\
                      Contact 1 Telephone,Contact 2 Telephone\n\
                      7,B801200005001,A801200005001,Khan,Ahmed,Sara,Noor Amal,27/03/2012,F,12,\
                      High Street,Bristol,BS1 4AA,100023336956,01632 960587,\n\
                      8,,,Khan,Khan,Adam,,27/03/2012,M,,,,,,+44 1632 960587,\n";
        let parsed = drop(&[(FileFormat::CensusPupilsCsv, pupils)]).unwrap();
        let sara = &parsed.records[0];
        assert_eq!(sara.record.local_id, "7");
        let d = &sara.record.demographics;
        assert_eq!(d.middle_names.as_deref(), Some("Noor Amal"));
        assert_eq!(d.former_family_names, ["Ahmed"]);
        assert_eq!(d.address_lines, ["12", "High Street", "Bristol"]);
        assert_eq!(d.household, ["uprn:100023336956", "phone:01632960587"]);
        assert!(sara
            .record
            .identifiers
            .contains(&crate::Identifier::new("former_upn", "A801200005001")));
        let shown = |field: &str| {
            sara.items
                .iter()
                .find(|i| i.field == field)
                .map(|i| &i.value)
        };
        assert_eq!(shown("address"), Some(&json!("12, High Street, Bristol")));
        assert_eq!(shown("middle_names"), Some(&json!("Noor Amal")));
        assert_eq!(shown("former_family_names"), Some(&json!(["Ahmed"])));
        assert_eq!(shown("household"), None, "household keys are not shown");
        // A former surname equal to the current one is no former name; the twin shares the
        // contact's number written another way.
        let adam = &parsed.records[1].record.demographics;
        assert!(adam.former_family_names.is_empty());
        assert!(adam.address_lines.is_empty() && adam.middle_names.is_none());
        assert_eq!(adam.household, ["phone:01632960587"]);
    }

    #[test]
    fn bad_rows_are_located() {
        let e = drop(&[(
            FileFormat::CensusPupilsCsv,
            "UPN,Surname,DOB\nB801200005001,Khan,31/02/2012\n",
        )])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f0.csv line 2 column dob: not a date (expected YYYY-MM-DD or DD/MM/YYYY)"
        );
        let e = drop(&[(
            FileFormat::CensusPupilsCsv,
            "UPN,Surname,DOB\nB801200005001,Khan,2012-01-01\nA8012000",
        )])
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f0.csv line 3: 1 fields where the header has 3"),
            "{e}"
        );
        let e = drop(&[(
            FileFormat::CensusExclusionsCsv,
            "UPN,Category,StartDate\nX,OTHER,2024-01-01\n",
        )])
        .unwrap_err();
        assert!(e.to_string().contains("column category"), "{e}");
        let e = drop(&[(
            FileFormat::CensusPupilsCsv,
            "Surname,DOB\nKhan,2012-01-01\n",
        )])
        .unwrap_err();
        assert!(e.to_string().contains("missing column"), "{e}");
        let e = drop(&[(
            FileFormat::CensusAttendanceCsv,
            "UPN,Term,Possible,Attended\nX,Autumn,10,12\n",
        )])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f0.csv line 2 column possible: more sessions attended than possible"
        );
    }

    #[test]
    fn long_values_and_rows_are_refused_by_their_limits() {
        let limits = Limits {
            field_bytes: 10,
            record_bytes: 30,
            ..Limits::default()
        };
        let read = |text| Table::read("p.csv", text, &limits).map(|_| ());
        assert!(read("UPN,Surname\nB801200005,Khan\n").is_ok());
        let e = read("UPN,Surname\nB801200005,Jane Doe-Smith\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.csv line 2 field 2: value over the limit of 10 bytes (limits.field_bytes)"
        );
        let e = read("A,B,C,D\n\"123456789\",123456789,123456789,1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.csv line 2: line of 33 bytes, over the limit of 30 bytes (limits.record_bytes)"
        );
        // A row whose lines are each within the limit, but not together.
        let e = read("A,B,C,D\n\"1234\n56789\",123456789,123456789,1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.csv line 2: row of 32 bytes, over the limit of 30 bytes (limits.record_bytes)"
        );
        let e = read("UPN,Surname of the pupil\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.csv line 1 field 2: value over"),
            "{e}"
        );
    }
}
