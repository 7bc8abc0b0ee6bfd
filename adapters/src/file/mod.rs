//! Files dropped in a folder: school census / MIS exports (CSV), the DfE Common Transfer File,
//! the CIN census and the SSDA903 looked-after return. One module per format:
//!
//! - [`census`]: MIS/census CSV — pupils on roll, termly attendance sessions, exclusions.
//! - [`ctf`]: the Common Transfer File XML.
//! - [`cin`]: the CIN census XML (before and after the 2024 `Sex` change).
//! - [`ssda903`]: the SSDA903 return, as its CSV tables (header, episodes) or as XML.
//!
//! Reading is separate from storing. [`collect`] and [`parse`] turn the files into records and
//! fail whole, naming the file, the line and the element or column, if any file is malformed;
//! the gateway then applies the difference to its import store in one transaction, so a bad
//! drop never leaves half an import behind. The adapter ([`FileAdapter`]) serves views from
//! that store through an [`ImportStore`], never from the files, so a file being rewritten while
//! a view is served cannot be read half-written.
//!
//! Identifiers are passed on as written: the master child index checks them and flags invalid
//! ones (most UPNs in real returns fail the check letter) without dropping the record.
//!
//! Every read is bounded ([`Limits`]): a file's size before it is read, each record, each value
//! and XML nesting, so one hostile or broken file can neither exhaust memory nor overflow the
//! stack. Errors and warnings name the file, line, element or column and the rule that failed,
//! never the value: they reach logs and the `import_runs` table, where personal data must not.

mod census;
mod cin;
mod ctf;
mod ssda903;
pub mod values;
mod xml;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{Demographics, Identifier, Item, Probe, SourceRecord};
use crate::{Adapter, AdapterError};

/// A folder of files from one agency, and which files in it hold what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The folder files are dropped in; relative to the configuration file.
    pub folder: PathBuf,
    /// Which files to read and how. Every entry must match at least one file, or the import is
    /// rejected: a half-delivered drop must not read as every pupil having left.
    pub files: Vec<FileSpec>,
    /// Seconds between scans of the folder while the gateway runs; 0 (the default) imports only
    /// on demand (`weft import SOURCE`). A scan of unchanged files costs one hash per file.
    #[serde(default)]
    pub watch_secs: u64,
    #[serde(default)]
    pub limits: Limits,
}

/// How much one import may hold, and how much of a source it may remove. Generous for real
/// returns (the largest, an LA's CIN census, runs to tens of megabytes), tight enough that a
/// broken or hostile file is refused before it costs gigabytes of memory or the stack.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest file, checked before it is read.
    pub file_bytes: u64,
    /// Largest record: one CSV row, or one record element (`<Pupil>`, `<Child>`, `<CHILD>`).
    pub record_bytes: usize,
    /// Largest value: one CSV field, or the text of one XML element.
    pub field_bytes: usize,
    /// Deepest nesting of XML elements.
    pub xml_depth: usize,
    /// Largest share of a source's stored records, in percent, that one import may remove. An
    /// import that would remove every record is refused whatever this says: an export cut to
    /// its header row must not read as every child having left. `weft import --allow-removals`
    /// applies such an import once.
    pub removed_percent: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_bytes: 128 * 1024 * 1024,
            record_bytes: 1024 * 1024,
            field_bytes: 8 * 1024,
            xml_depth: 32,
            removed_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub format: FileFormat,
    /// File name pattern within the folder; `*` matches any run of characters, `?` one.
    /// Several matching files are read in name order (e.g. one attendance file per term).
    pub name: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    CensusPupilsCsv,
    CensusAttendanceCsv,
    CensusExclusionsCsv,
    CtfXml,
    CinXml,
    Ssda903HeaderCsv,
    Ssda903EpisodesCsv,
    Ssda903Xml,
}

/// Why an import was rejected. Every variant names the file; parse errors name the line and the
/// element or column too, so whoever produced the file can find the fault. None carries a value
/// read from a file: these messages are logged and stored.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("no file in {folder} matches {pattern:?}")]
    Missing { folder: String, pattern: String },
    #[error("{file}: {bytes} bytes, over the limit of {limit} bytes (limits.file_bytes)")]
    TooLarge {
        file: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{file} line {line}{}: {reason}", at.as_ref().map(|a| format!(" {a}")).unwrap_or_default())]
    Malformed {
        file: String,
        line: usize,
        /// The element (`<Child>`) or column (`column DOB`) at fault.
        at: Option<String>,
        reason: String,
    },
}

impl ImportError {
    /// Whether the files themselves are at fault (malformed or too large), rather than the drop
    /// being incomplete or the folder unreadable: only such a drop is worth setting aside.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            ImportError::Malformed { .. } | ImportError::TooLarge { .. }
        )
    }
}

/// A file the configuration names, as found in the folder, before it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub format: FileFormat,
    pub bytes: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// A file as read from the folder, before parsing.
#[derive(Debug, Clone)]
pub struct DroppedFile {
    /// The file name within the folder.
    pub name: String,
    pub format: FileFormat,
    pub bytes: Vec<u8>,
}

/// One record as imported: what the master child index links on, and what views show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Imported {
    pub record: SourceRecord,
    pub items: Vec<Item>,
}

/// The records of one drop, in local-id order, and what was tolerated on the way.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: Vec<Imported>,
    pub warnings: Vec<String>,
}

/// Lists the files the configuration names, in configuration order, then name order, without
/// reading them: a watcher compares listings to tell a drop still being written from one at rest.
pub fn survey(config: &FileConfig) -> Result<Vec<Found>, ImportError> {
    let folder = config.folder.display().to_string();
    let entries = std::fs::read_dir(&config.folder).map_err(|e| ImportError::Read {
        file: folder.clone(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<(String, std::fs::Metadata)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.metadata().ok()?)))
        .filter(|(_, m)| m.is_file())
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for spec in &config.files {
        let before = out.len();
        out.extend(
            files
                .iter()
                .filter(|(n, _)| glob(&spec.name, n))
                .map(|(name, meta)| Found {
                    name: name.clone(),
                    format: spec.format,
                    bytes: meta.len(),
                    modified: meta.modified().ok(),
                }),
        );
        if out.len() == before {
            return Err(ImportError::Missing {
                folder: folder.clone(),
                pattern: spec.name.clone(),
            });
        }
    }
    Ok(out)
}

/// Reads every file the configuration names, in configuration order, then name order. A file
/// over `limits.file_bytes` is refused before it is read, and a file that grows past the limit
/// while being read is refused too.
pub fn collect(config: &FileConfig) -> Result<Vec<DroppedFile>, ImportError> {
    let limit = config.limits.file_bytes;
    survey(config)?
        .into_iter()
        .map(|found| {
            let too_large = |bytes| ImportError::TooLarge {
                file: found.name.clone(),
                bytes,
                limit,
            };
            if found.bytes > limit {
                return Err(too_large(found.bytes));
            }
            let unreadable = |e: std::io::Error| ImportError::Read {
                file: found.name.clone(),
                reason: e.to_string(),
            };
            let file = std::fs::File::open(config.folder.join(&found.name)).map_err(unreadable)?;
            // Sized from the listing, so reading does not grow the buffer by doubling.
            let mut bytes = Vec::with_capacity(usize::try_from(found.bytes).unwrap_or(0));
            file.take(limit.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(unreadable)?;
            if bytes.len() as u64 > limit {
                return Err(too_large(bytes.len() as u64));
            }
            Ok(DroppedFile {
                name: found.name,
                format: found.format,
                bytes,
            })
        })
        .collect()
}

/// Parses a drop into records. Any error rejects the whole drop.
pub fn parse(files: &[DroppedFile], limits: &Limits) -> Result<Parsed, ImportError> {
    let mut batch = Batch::default();
    for f in files {
        if f.bytes.len() as u64 > limits.file_bytes {
            return Err(ImportError::TooLarge {
                file: f.name.clone(),
                bytes: f.bytes.len() as u64,
                limit: limits.file_bytes,
            });
        }
        let text = utf8(&f.name, &f.bytes)?;
        let (name, b) = (f.name.as_str(), &mut batch);
        match f.format {
            FileFormat::CensusPupilsCsv => census::pupils(name, text, limits, b)?,
            FileFormat::CensusAttendanceCsv => census::attendance(name, text, limits, b)?,
            FileFormat::CensusExclusionsCsv => census::exclusions(name, text, limits, b)?,
            FileFormat::CtfXml => ctf::read(name, text, limits, b)?,
            FileFormat::CinXml => cin::read(name, text, limits, b)?,
            FileFormat::Ssda903HeaderCsv => ssda903::header_csv(name, text, limits, b)?,
            FileFormat::Ssda903EpisodesCsv => ssda903::episodes_csv(name, text, limits, b)?,
            FileFormat::Ssda903Xml => ssda903::xml(name, text, limits, b)?,
        }
    }
    Ok(batch.finish())
}

/// Moves a rejected drop out of the watched folder into `rejected/<UTC time>/`, with a
/// `REJECTED.txt` saying why, so that it is neither read again nor lost: whoever produced it can
/// see the reason beside the files, fix the export and drop it again. Returns the new folder.
pub fn set_aside(config: &FileConfig, names: &[String], reason: &str) -> std::io::Result<PathBuf> {
    let parent = config.folder.join("rejected");
    std::fs::create_dir_all(&parent)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    // Two rejections within a second get folders of their own.
    let mut n = 1;
    let dir = loop {
        let dir = match n {
            1 => parent.join(&stamp),
            _ => parent.join(format!("{stamp}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    };
    std::fs::write(
        dir.join("REJECTED.txt"),
        format!(
            "This drop was rejected and nothing of it was imported; the previous import is still \
             served.\n\n{reason}\n\nFix the export and drop all of its files in the folder again.\n"
        ),
    )?;
    for name in names {
        std::fs::rename(config.folder.join(name), dir.join(name))?;
    }
    Ok(dir)
}

/// The text of a file, without a byte-order mark. Exports are UTF-8 (or ASCII); anything else
/// is rejected at the line of the first bad byte rather than imported as mojibake.
fn utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, ImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let upto = &bytes[..e.valid_up_to()];
        ImportError::Malformed {
            file: file.to_string(),
            line: 1 + upto.iter().filter(|&&b| b == b'\n').count(),
            at: None,
            reason: "not UTF-8 text (save the export as UTF-8)".into(),
        }
    })
}

/// `*` and `?` wildcards over a whole file name.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Byte offset to line number.
pub(crate) struct Lines(Vec<usize>);

impl Lines {
    pub fn new(text: &str) -> Self {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }
    pub fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
    pub fn count(&self) -> usize {
        self.0.len() + 1
    }
}

/// Records being assembled from one drop; several files may add to one record (the pupils file
/// gives identity, the attendance file terms, the exclusions file exclusions).
#[derive(Default)]
pub(crate) struct Batch {
    drafts: BTreeMap<String, Draft>,
    pub warnings: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Draft {
    identifiers: Vec<Identifier>,
    demographics: Demographics,
    fields: BTreeMap<(String, String), Value>,
    lists: BTreeMap<(String, String), Vec<Value>>,
}

impl Batch {
    pub fn record(&mut self, local_id: &str) -> &mut Draft {
        self.drafts.entry(local_id.trim().to_string()).or_default()
    }

    fn finish(self) -> Parsed {
        let records = self
            .drafts
            .into_iter()
            .map(|(local_id, d)| {
                let mut items: Vec<Item> = d
                    .fields
                    .into_iter()
                    .map(|((c, f), v)| Item::new(c, f, v))
                    .collect();
                items.extend(
                    d.lists
                        .into_iter()
                        .map(|((c, f), v)| Item::new(c, f, Value::Array(v))),
                );
                Imported {
                    record: SourceRecord {
                        local_id,
                        identifiers: d.identifiers,
                        demographics: d.demographics,
                        score: None,
                        // A file that marks a record restricted says so in its items, as a
                        // view would read it.
                        restricted: items.iter().any(crate::record::marks_restriction),
                    },
                    items,
                }
            })
            .collect();
        Parsed {
            records,
            warnings: self.warnings,
        }
    }
}

impl Draft {
    /// Adds an identifier unless it is blank or already there. Invalid values are kept.
    pub fn identifier(&mut self, kind: &str, value: Option<&str>) {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return;
        };
        if !self
            .identifiers
            .iter()
            .any(|i| i.kind == kind && i.value == value)
        {
            self.identifiers.push(Identifier::new(kind, value));
        }
    }

    /// Sets the demographics that are present, and shows them as `identity.core` /
    /// `identity.contact` items, named as the other adapters name them.
    pub fn demographics(&mut self, d: Demographics) {
        let mut put = |slot: &mut Option<String>, value: Option<String>, cat: &str, field: &str| {
            if let Some(v) = value {
                self.fields
                    .insert((cat.into(), field.into()), Value::String(v.clone()));
                *slot = Some(v);
            }
        };
        let dm = &mut self.demographics;
        put(
            &mut dm.given_name,
            d.given_name,
            "identity.core",
            "given_name",
        );
        put(
            &mut dm.family_name,
            d.family_name,
            "identity.core",
            "family_name",
        );
        put(
            &mut dm.birth_date,
            d.birth_date,
            "identity.core",
            "birth_date",
        );
        put(&mut dm.sex, d.sex, "identity.core", "sex");
        put(&mut dm.postcode, d.postcode, "identity.contact", "postcode");
        put(
            &mut dm.middle_names,
            d.middle_names,
            "identity.core",
            "middle_names",
        );
        if !d.address_lines.is_empty() {
            self.fields.insert(
                ("identity.contact".into(), "address".into()),
                Value::String(d.address_lines.join(", ")),
            );
            dm.address_lines = d.address_lines;
        }
        for name in &d.former_family_names {
            dm.add_former_family_name(name);
        }
        if !dm.former_family_names.is_empty() {
            self.fields.insert(
                ("identity.core".into(), "former_family_names".into()),
                Value::from(dm.former_family_names.clone()),
            );
        }
        // Kept for matching, not shown: where a child used to live, and the household keys
        // (a carer's telephone among them), are not what a view is for.
        for a in d.former_addresses {
            if !dm.former_addresses.contains(&a) {
                dm.former_addresses.push(a);
            }
        }
        for h in d.household {
            if !dm.household.contains(&h) {
                dm.household.push(h);
            }
        }
    }

    pub fn set(&mut self, category: &str, field: &str, value: impl Into<Value>) {
        self.fields
            .insert((category.into(), field.into()), value.into());
    }

    pub fn push(&mut self, category: &str, field: &str, value: impl Into<Value>) {
        self.lists
            .entry((category.into(), field.into()))
            .or_default()
            .push(value.into());
    }
}

/// Where imported records are kept between imports; the gateway keeps them in its database.
#[async_trait]
pub trait ImportStore: Send + Sync {
    /// Every record last imported for a source.
    async fn records(&self, source: &str) -> Result<Vec<Imported>, AdapterError>;
    /// One record, or `None` if the last import did not contain it.
    async fn record(&self, source: &str, local_id: &str) -> Result<Option<Imported>, AdapterError>;
}

/// Serves a `file` source from what was last imported.
pub struct FileAdapter {
    source: String,
    store: Arc<dyn ImportStore>,
}

impl FileAdapter {
    pub fn new(source: String, store: Arc<dyn ImportStore>) -> Self {
        Self { source, store }
    }
}

#[async_trait]
impl Adapter for FileAdapter {
    async fn list(&self) -> Result<Option<Vec<SourceRecord>>, AdapterError> {
        let all = self.store.records(&self.source).await?;
        Ok(Some(all.into_iter().map(|i| i.record).collect()))
    }

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

    async fn fetch(&self, local_id: &str) -> Result<Option<Vec<Item>>, AdapterError> {
        Ok(self
            .store
            .record(&self.source, local_id)
            .await?
            .map(|i| i.items))
    }
}

/// Resolves a relative folder against the configuration file's directory.
pub fn resolve_folder(config: &mut FileConfig, base: &Path) {
    if config.folder.is_relative() {
        config.folder = base.join(&config.folder);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("pupils*.csv", "pupils_2025-01.csv"));
        assert!(glob("*.xml", "a.xml"));
        assert!(!glob("*.xml", "a.xml.part"));
        assert!(glob("term?.csv", "term1.csv"));
        assert!(!glob("term?.csv", "term10.csv"));
    }

    #[test]
    fn non_utf8_is_located() {
        let e = utf8("x.csv", b"a,b\n1,2\n\xff,3\n").unwrap_err();
        assert!(e.to_string().starts_with("x.csv line 3"), "{e}");
    }
}
