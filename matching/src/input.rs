//! CSV input for the `weft match` commands: a column mapping says which column holds which
//! field. Every problem is reported with the file and line, so a data team can fix the file
//! rather than guess.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::block::Rule;
use crate::record::{Extra, Field, Record};

/// Where the true identity of each record is, for evaluation only.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    pub column: String,
    /// Split the column's value on this character and take part `part` (from 0): FEBRL's
    /// `rec-12-dup-0` is person 12 with delimiter `-` and part 1.
    #[serde(default)]
    pub delimiter: Option<char>,
    #[serde(default)]
    pub part: Option<usize>,
}

impl Truth {
    fn entity<'v>(&self, value: &'v str) -> Option<&'v str> {
        match (self.delimiter, self.part) {
            (Some(d), Some(p)) => value.split(d).nth(p),
            (Some(d), None) => value.split(d).next(),
            _ => Some(value),
        }
    }
}

/// A matching configuration file (TOML). Everything is optional and command-line options win.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Field name → column name, e.g. `family_name = "surname"`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Columns for the right-hand file of `link`, when they differ from the left's.
    #[serde(default)]
    pub right_columns: BTreeMap<String, String>,
    #[serde(default)]
    pub truth: Option<Truth>,
    /// Blocking rules such as `family_soundex+birth_year`.
    #[serde(default)]
    pub blocking: Option<Vec<String>>,
    /// Probability at or above which a pair is a match.
    #[serde(default)]
    pub threshold: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Line {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: no column `{column}` (mapped to {field}); the header has: {header}")]
    MissingColumn {
        path: PathBuf,
        column: String,
        field: String,
        header: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Config(String),
}

/// Field → column for one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    pub columns: BTreeMap<Field, String>,
    /// Columns of what a record carries beyond the compared fields (middle names, a former
    /// family name, a former UPN or postcode, a household key): kept on the record for the
    /// name comparisons and the rules that tell a child from a twin or a sibling.
    pub extras: BTreeMap<Extra, String>,
    /// Keep a record whose date of birth cannot be read, flagged and without one, rather than
    /// stop at it (historical files write dates such as `-0050-01-0`).
    pub flag_bad_dates: bool,
}

impl Mapping {
    /// Builds a mapping from `field=column` entries, as the command line and the config file
    /// give them.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, InputError> {
        let mut columns = BTreeMap::new();
        let mut extras = BTreeMap::new();
        for (field, column) in entries {
            let name = field.trim();
            match name.parse::<Field>() {
                Ok(f) => {
                    columns.insert(f, column.trim().to_string());
                }
                Err(e) => {
                    let x: Extra = name
                        .parse()
                        .map_err(|_| InputError::Config(e.to_string()))?;
                    extras.insert(x, column.trim().to_string());
                }
            }
        }
        Ok(Self {
            columns,
            extras,
            flag_bad_dates: false,
        })
    }

    /// Takes `other`'s columns over this one's (the command line's over the config file's).
    pub fn merge(&mut self, other: Mapping) {
        self.columns.extend(other.columns);
        self.extras.extend(other.extras);
    }

    /// The fields mapped, apart from the id: what the comparisons and rules may use.
    pub fn fields(&self) -> Vec<Field> {
        self.columns
            .keys()
            .copied()
            .filter(|f| *f != Field::Id)
            .collect()
    }
}

/// Parses `--map field=column` values.
pub fn parse_map_arg(raw: &str) -> Result<(String, String), InputError> {
    raw.split_once('=')
        .map(|(f, c)| (f.trim().to_string(), c.trim().to_string()))
        .filter(|(f, c)| !f.is_empty() && !c.is_empty())
        .ok_or_else(|| InputError::Config(format!("`{raw}` is not field=column")))
}

/// Parses blocking rules, naming the one that is wrong.
pub fn parse_rules(raw: &[String]) -> Result<Vec<Rule>, InputError> {
    raw.iter()
        .map(|r| {
            r.parse()
                .map_err(|e| InputError::Config(format!("blocking rule `{r}`: {e}")))
        })
        .collect()
}

/// Gives each true identity a small number, shared across the files of one run.
#[derive(Debug, Default)]
pub struct Entities(HashMap<String, u32>);

impl Entities {
    fn id(&mut self, name: &str) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(name.to_string()).or_insert(next)
    }
}

/// A file read: its records, the line each came from, and (when asked) their true identities.
#[derive(Debug, Default)]
pub struct Table {
    pub records: Vec<Record>,
    pub truth: Option<Vec<u32>>,
}

/// Reads a CSV file with a header row. Surrounding spaces are trimmed from every cell (FEBRL
/// writes a space after each comma). A record without a mapped id gets its line number.
pub fn read(
    path: &Path,
    mapping: &Mapping,
    truth: Option<&Truth>,
    entities: &mut Entities,
) -> Result<Table, InputError> {
    let file = std::fs::File::open(path).map_err(|source| InputError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_from(file, path, mapping, truth, entities)
}

pub fn read_from<R: std::io::Read>(
    reader: R,
    path: &Path,
    mapping: &Mapping,
    truth: Option<&Truth>,
    entities: &mut Entities,
) -> Result<Table, InputError> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(reader);
    let line_error = |e: csv::Error| {
        let line = e.position().map_or(1, |p| p.line());
        let message = match e.kind() {
            csv::ErrorKind::Utf8 { err, .. } => {
                format!("field {} is not valid UTF-8", err.field() + 1)
            }
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => {
                format!("{len} fields where the header has {expected_len}")
            }
            _ => e.to_string(),
        };
        InputError::Line {
            path: path.to_path_buf(),
            line,
            message,
        }
    };
    let header = csv.headers().map_err(line_error)?.clone();
    let find = |column: &str, field: &str| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| InputError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_string(),
                field: field.to_string(),
                header: header.iter().collect::<Vec<_>>().join(", "),
            })
    };
    let columns: Vec<(Field, usize)> = mapping
        .columns
        .iter()
        .map(|(f, c)| find(c, f.as_str()).map(|i| (*f, i)))
        .collect::<Result<_, _>>()?;
    let extras: Vec<(Extra, usize)> = mapping
        .extras
        .iter()
        .map(|(x, c)| find(c, x.as_str()).map(|i| (*x, i)))
        .collect::<Result<_, _>>()?;
    let truth_column = truth.map(|t| find(&t.column, "truth")).transpose()?;
    let mut table = Table {
        truth: truth.map(|_| Vec::new()),
        ..Default::default()
    };
    let mut row = csv::StringRecord::new();
    // Each id's first line: an id used twice would make pairs and clusters ambiguous.
    let has_id = columns.iter().any(|&(f, _)| f == Field::Id);
    let mut ids: HashMap<String, u64> = HashMap::new();
    loop {
        match csv.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(line_error(e)),
        }
        let line = row.position().map_or(0, |p| p.line());
        let mut r = Record {
            id: line.to_string(),
            ..Default::default()
        };
        for &(field, i) in &columns {
            match r.set(field, row.get(i).unwrap_or_default()) {
                Ok(()) => {}
                Err(e) if mapping.flag_bad_dates => r.flags.push(crate::record::Flag {
                    field,
                    problem: e.source.to_string(),
                }),
                Err(e) => {
                    return Err(InputError::Line {
                        path: path.to_path_buf(),
                        line,
                        message: format!(
                            "{e} (or give --flag-bad-dates to keep such records, flagged and \
                             without a date of birth)"
                        ),
                    })
                }
            }
        }
        for &(extra, i) in &extras {
            r.add_extra(extra, row.get(i).unwrap_or_default());
        }
        if let (Some(t), Some(i), Some(out)) = (truth, truth_column, table.truth.as_mut()) {
            let value = row.get(i).unwrap_or_default();
            let entity =
                t.entity(value)
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| InputError::Line {
                        path: path.to_path_buf(),
                        line,
                        message: format!("truth column `{}` has no identity in this row", t.column),
                    })?;
            out.push(entities.id(entity));
        }
        if has_id {
            if let Some(first) = ids.insert(r.id.clone(), line) {
                return Err(InputError::Line {
                    path: path.to_path_buf(),
                    line,
                    message: format!(
                        "record id `{}` was already used on line {first}: ids must be unique",
                        r.id
                    ),
                });
            }
        }
        table.records.push(r);
    }
    if table.records.is_empty() {
        return Err(InputError::File {
            path: path.to_path_buf(),
            message: "no records after the header".into(),
        });
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        Mapping::parse([
            ("id", "rec_id"),
            ("given_name", "given"),
            ("birth_date", "dob"),
        ])
        .unwrap()
    }

    fn read_str(text: &[u8]) -> Result<Table, InputError> {
        let truth = Truth {
            column: "rec_id".into(),
            delimiter: Some('-'),
            part: Some(1),
        };
        read_from(
            text,
            Path::new("t.csv"),
            &mapping(),
            Some(&truth),
            &mut Entities::default(),
        )
    }

    #[test]
    fn middle_and_former_names_and_households_are_mapped_onto_the_record() {
        let m = Mapping::parse([
            ("id", "rec_id"),
            ("given_name", "given"),
            ("middle_names", "middle"),
            ("former_family_name", "was"),
            ("household", "home"),
        ])
        .unwrap();
        assert_eq!(m.extras.len(), 3);
        let t = read_from(
            &b"rec_id,given,middle,was,home\n1,Ruby,Rose Mary,Smith,uprn:100\n2,Ann,,,\n"[..],
            Path::new("x.csv"),
            &m,
            None,
            &mut Entities::default(),
        )
        .unwrap();
        let r = &t.records[0];
        assert_eq!(r.middle.as_ref().map(|n| n.tokens.len()), Some(2));
        assert_eq!(r.former_family.len(), 1);
        assert_eq!(r.household, vec!["uprn:100".to_string()]);
        let empty = &t.records[1];
        assert!(
            empty.middle.is_none() && empty.former_family.is_empty() && empty.household.is_empty()
        );
        let e = Mapping::parse([("maiden_name", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("middle_names") && e.contains("household"), "{e}");
    }

    #[test]
    fn reads_febrl_style_files() {
        let t = read_str(b"rec_id, given, dob\nrec-1-org, amy, 20120304\nrec-1-dup-0, amie, 20120304\nrec-2-org, ben,\n").unwrap();
        assert_eq!(t.records.len(), 3);
        assert_eq!(t.records[1].id, "rec-1-dup-0");
        assert_eq!(t.truth, Some(vec![0, 0, 1]));
        assert!(t.records[2].dob.is_none());
    }

    #[test]
    fn errors_name_the_line() {
        let e = read_str(
            b"rec_id, given, dob\nrec-1-org, amy, 20120304\nrec-2-org, ben, next tuesday\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv: line 3: birth_date: date of birth must be YYYY-MM-DD, YYYYMMDD or DD/MM/YYYY \
             (or give --flag-bad-dates to keep such records, flagged and without a date of birth)"
        );
        let e =
            read_str(b"rec_id, given, dob\nrec-1-org, amy, 20120304\nrec-1-org, ben, 20120304\n")
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv: line 3: record id `rec-1-org` was already used on line 2: ids must be unique"
        );
        let e = read_str(b"rec_id, given, dob\nrec-1-org, \xff\xfe, 20120304\n").unwrap_err();
        assert!(e.to_string().starts_with("t.csv: line 2: "), "{e}");
        assert!(e.to_string().contains("UTF-8"), "{e}");
        let e = read_str(b"rec_id, given, dob\nrec-1-org, amy\n").unwrap_err();
        assert!(e.to_string().starts_with("t.csv: line 2: "), "{e}");
        let e = read_str(b"rec_id, first, dob\nrec-1-org, amy, 20120304\n").unwrap_err();
        assert!(
            matches!(e, InputError::MissingColumn { ref column, .. } if column == "given"),
            "{e}"
        );
        let e = read_str(b"rec_id, given, dob\n").unwrap_err();
        assert!(e.to_string().contains("no records"), "{e}");
        let mut lenient = mapping();
        lenient.flag_bad_dates = true;
        let t = read_from(
            &b"rec_id, given, dob\nrec-1-org, amy, -0050-01-0\n"[..],
            Path::new("t.csv"),
            &lenient,
            None,
            &mut Entities::default(),
        )
        .unwrap();
        assert!(t.records[0].dob.is_none());
        assert_eq!(t.records[0].flags.len(), 1);
    }

    #[test]
    fn map_arguments() {
        assert_eq!(
            parse_map_arg("family_name=surname").unwrap(),
            ("family_name".into(), "surname".into())
        );
        assert!(parse_map_arg("family_name").is_err());
        assert!(Mapping::parse([("shoe_size", "x")]).is_err());
        assert!(parse_rules(&["dob".into(), "nope".into()]).is_err());
    }
}
