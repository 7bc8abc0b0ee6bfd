//! The `file` adapter's readers over every education and LA-return sample in
//! `shared/data/samples/` (CIN census ×3, SSDA903 CSV and XML) and over generated CSV and CTF
//! (`tests/data/`), and the folder handling around them: bounded reads, setting a drop aside.

mod common;

use common::sample_path;
use serde_json::{json, Value};
use weft_adapters::file::{self, DroppedFile, FileConfig, FileFormat, FileSpec, Imported, Limits};

fn sample(name: &str, format: FileFormat) -> DroppedFile {
    DroppedFile {
        name: name.into(),
        format,
        bytes: std::fs::read(sample_path(name)).expect("sample readable"),
    }
}

fn item<'a>(r: &'a Imported, field: &str) -> &'a Value {
    &r.items
        .iter()
        .find(|i| i.field == field)
        .unwrap_or_else(|| panic!("no {field} on {}", r.record.local_id))
        .value
}

fn by_id<'a>(records: &'a [Imported], id: &str) -> &'a Imported {
    records
        .iter()
        .find(|r| r.record.local_id == id)
        .unwrap_or_else(|| panic!("no record {id}"))
}

#[test]
fn cin_2022_liia_sample_maps() {
    let parsed = file::parse(
        &[sample("cin_census_liia_cin-2022.xml", FileFormat::CinXml)],
        &Limits::default(),
    )
    .unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    assert_eq!(parsed.records.len(), 1);
    let r = &parsed.records[0];
    assert_eq!(r.record.local_id, "DfEX0000001");
    let ids: Vec<(&str, &str)> = r
        .record
        .identifiers
        .iter()
        .map(|i| (i.kind.as_str(), i.value.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("upn", "A123456789123"), ("former_upn", "X98765432123B")]
    );
    assert_eq!(
        r.record.demographics.birth_date.as_deref(),
        Some("1966-03-24")
    );
    assert_eq!(r.record.demographics.sex.as_deref(), Some("male"));
    let episodes = item(r, "episodes").as_array().unwrap();
    let kinds: Vec<&str> = episodes
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["child_in_need", "section_47", "child_protection"]);
    assert_eq!(episodes[0]["category"], "N4");
    assert_eq!(episodes[0]["end_date"], "1971-02-27");
    assert_eq!(episodes[0]["referral_nfa"], false);
    assert_eq!(episodes[2]["category"], "PHY");
    assert_eq!(item(r, "disabilities"), &json!(["HAND", "HEAR"]));
}

#[test]
fn cin_2026_sample_stray_text_is_tolerated_and_reported() {
    let parsed = file::parse(
        &[sample(
            "cin_census_d2i_CIN_Census_2026.xml",
            FileFormat::CinXml,
        )],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(parsed.records.len(), 2);
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
    // Located by line and element; the stray text itself is not quoted.
    assert_eq!(
        parsed.warnings[0],
        "cin_census_d2i_CIN_Census_2026.xml line 23: stray text inside <ChildIdentifiers> ignored"
    );
    // The element after the stray text is read normally.
    let first = by_id(&parsed.records, "DfEX0000001");
    assert_eq!(
        first.record.demographics.birth_date.as_deref(),
        Some("2015-03-27")
    );
    // `Sex` as a number in one child and as a letter in the other.
    assert_eq!(first.record.demographics.sex.as_deref(), Some("male"));
    let second = by_id(&parsed.records, "child_fails_assessments");
    assert_eq!(second.record.demographics.sex.as_deref(), Some("male"));
    assert!(second.record.identifiers.is_empty(), "UPNunknown: no UPN");
    // `ReferralNFA` written as 0.
    assert_eq!(item(first, "episodes")[0]["referral_nfa"], false);
}

#[test]
fn cin_fake_sample_maps_every_child() {
    let parsed = file::parse(
        &[sample(
            "cin_census_d2i_fake_CIN_data.xml",
            FileFormat::CinXml,
        )],
        &Limits::default(),
    )
    .unwrap();
    let text = std::fs::read_to_string(sample_path("cin_census_d2i_fake_CIN_data.xml")).unwrap();
    let children = text.matches("<Child>").count();
    assert_eq!(parsed.records.len(), children);
    assert!(parsed.warnings.is_empty());
    let r = by_id(&parsed.records, "RND000824303014");
    assert_eq!(
        r.record.demographics.sex.as_deref(),
        Some("other"),
        "GenderCurrent 9"
    );
    assert_eq!(item(r, "episodes").as_array().unwrap().len(), 2);
    // Every child keeps its UPN, valid or not.
    assert!(parsed
        .records
        .iter()
        .all(|r| r.record.identifiers.iter().any(|i| i.kind == "upn")));
}

#[test]
fn ssda903_csv_tables_join() {
    let parsed = file::parse(
        &[
            sample("ssda903_d2i_header.csv", FileFormat::Ssda903HeaderCsv),
            sample("ssda903_d2i_episodes.csv", FileFormat::Ssda903EpisodesCsv),
        ],
        &Limits::default(),
    )
    .unwrap();
    let header = std::fs::read_to_string(sample_path("ssda903_d2i_header.csv")).unwrap();
    assert_eq!(parsed.records.len(), header.lines().count() - 1);
    let r = by_id(&parsed.records, "566910");
    assert_eq!(
        r.record.demographics.birth_date.as_deref(),
        Some("2008-03-27")
    );
    assert_eq!(r.record.demographics.sex.as_deref(), Some("female"));
    assert_eq!(r.record.identifiers[0].value, "D051910639385");
    let eps = item(r, "episodes").as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["start_date"], "2016-02-15");
    assert_eq!(eps[0]["end_date"], "2017-08-14");
    assert_eq!(eps[1]["end_date"], Value::Null);
    assert_eq!(eps[1]["category"], "C2");
    // Placement postcodes are never passed on.
    let all = serde_json::to_string(&parsed.records).unwrap();
    assert!(!all.contains("WV27 9FW") && !all.contains("EG19 7TT"));
}

#[test]
fn ssda903_xml_sample_maps() {
    let parsed = file::parse(
        &[sample("ssda903_d2i_fake_903.xml", FileFormat::Ssda903Xml)],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(parsed.records.len(), 253);
    let r = by_id(&parsed.records, "907440");
    assert_eq!(
        r.record.demographics.birth_date.as_deref(),
        Some("2010-07-28")
    );
    let eps = item(r, "episodes").as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["placement"], "R5");
    assert_eq!(eps[1]["reason_ceased"], "E11");
    let all = serde_json::to_string(&parsed.records).unwrap();
    assert!(!all.contains("E7 5YR"), "placement postcode leaked");
}

#[test]
fn truncated_and_corrupted_samples_are_rejected_with_location() {
    let mut cin = sample("cin_census_d2i_fake_CIN_data.xml", FileFormat::CinXml);
    cin.bytes.truncate(100_000);
    let e = file::parse(&[cin], &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cin_census_d2i_fake_CIN_data.xml line "),
        "{e}"
    );
    assert!(e.contains("<CINdetails>: syntax error"), "{e}");
    // Cut at a tag boundary instead: the unclosed elements are named.
    let mut cin = sample("cin_census_d2i_fake_CIN_data.xml", FileFormat::CinXml);
    let cut = cin.bytes[..100_000]
        .iter()
        .rposition(|&b| b == b'>')
        .unwrap()
        + 1;
    cin.bytes.truncate(cut);
    let e = file::parse(&[cin], &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("the file ends inside <"), "{e}");

    let mut eps = sample("ssda903_d2i_episodes.csv", FileFormat::Ssda903EpisodesCsv);
    eps.bytes.truncate(50_000);
    let e = file::parse(&[eps], &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ssda903_d2i_episodes.csv line "), "{e}");

    let mut xml = sample("ssda903_d2i_fake_903.xml", FileFormat::Ssda903Xml);
    let text = String::from_utf8(xml.bytes).unwrap().replacen(
        "<DOB>28/07/2010</DOB>",
        "<DOB>28/13/2010</DOB>",
        1,
    );
    xml.bytes = text.into_bytes();
    let e = file::parse(&[xml], &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("<DOB>: not a date"), "{e}");
    assert!(
        !e.contains("28/13/2010"),
        "the rejected value is never quoted: {e}"
    );

    let mut cin = sample("cin_census_liia_cin-2022.xml", FileFormat::CinXml);
    let text = String::from_utf8(cin.bytes)
        .unwrap()
        .replace("<GenderCurrent>1<", "<GenderCurrent>7<");
    cin.bytes = text.into_bytes();
    let e = file::parse(&[cin], &Limits::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cin_census_liia_cin-2022.xml line 26 <GenderCurrent>: not a sex code (1/2/0/9 or M/F/U)"
    );
}

/// A Common Transfer File in the shape schools' MIS systems write (no public sample exists).
const CTF: &str = include_str!("data/ctf.xml");

#[test]
fn ctf_maps_identity_address_attendance_sen_and_care() {
    let parsed = file::parse(
        &[DroppedFile {
            name: "ctf.xml".into(),
            format: FileFormat::CtfXml,
            bytes: CTF.as_bytes().to_vec(),
        }],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(parsed.records.len(), 2);
    let sara = by_id(&parsed.records, "B801200005001");
    assert_eq!(
        sara.record.demographics.family_name.as_deref(),
        Some("Khan")
    );
    assert_eq!(sara.record.demographics.sex.as_deref(), Some("female"));
    assert_eq!(
        sara.record.demographics.postcode.as_deref(),
        Some("BS1 4AA")
    );
    assert_eq!(item(sara, "address"), "12, High Street, Bristol");
    let d = &sara.record.demographics;
    assert_eq!(d.middle_names.as_deref(), Some("Amal Noor"));
    assert_eq!(d.former_family_names, ["Begum"]);
    assert_eq!(
        d.address_lines,
        ["12", "High Street", "Bristol"],
        "the pupil's address, not the contact's; the post town once"
    );
    assert_eq!(
        d.household,
        ["uprn:100023336956", "phone:01632960587"],
        "the UPRN and the contact's telephone; the pupil's mobile is not a household's"
    );
    assert!(sara
        .record
        .identifiers
        .contains(&weft_adapters::Identifier::new(
            "former_upn",
            "P207000016049"
        )));
    assert_eq!(item(sara, "send_status"), "EHC plan");
    assert_eq!(item(sara, "looked_after"), true);
    assert_eq!(item(sara, "school_urn"), "100001");
    assert_eq!(item(sara, "terms")[0]["attended_sessions"], 342);
    assert_eq!(item(sara, "terms")[0]["attendance_percent"], 90.0);
    let jo = by_id(&parsed.records, "A801200005001");
    assert_eq!(
        jo.record.demographics.sex.as_deref(),
        Some("male"),
        "pre-2022 <Gender>"
    );
    assert_eq!(item(jo, "looked_after"), false);
    assert_eq!(
        jo.record.demographics.household,
        ["phone:01632960587"],
        "one number written two ways is one household"
    );

    let truncated = &CTF[..CTF.find("<Attendance>").unwrap()];
    let e = file::parse(
        &[DroppedFile {
            name: "ctf.xml".into(),
            format: FileFormat::CtfXml,
            bytes: truncated.as_bytes().to_vec(),
        }],
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("ends inside an element opened on line 9"),
        "{e}"
    );
}

#[test]
fn collect_requires_every_pattern_and_reads_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("att_2.csv"),
        "UPN,Term,Possible,Attended\nX,Spring,10,9\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("att_1.csv"),
        "UPN,Term,Possible,Attended\nX,Autumn,10,5\n",
    )
    .unwrap();
    let mut config = FileConfig {
        folder: dir.path().to_path_buf(),
        files: vec![FileSpec {
            format: FileFormat::CensusAttendanceCsv,
            name: "att_*.csv".into(),
        }],
        watch_secs: 0,
        limits: Limits::default(),
    };
    let files = file::collect(&config).unwrap();
    assert_eq!(
        files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["att_1.csv", "att_2.csv"]
    );
    let parsed = file::parse(&files, &Limits::default()).unwrap();
    assert_eq!(item(&parsed.records[0], "terms")[1]["term"], "Spring");
    config.files.push(FileSpec {
        format: FileFormat::CensusPupilsCsv,
        name: "pupils*.csv".into(),
    });
    let e = file::collect(&config).unwrap_err();
    assert!(e.to_string().contains("matches \"pupils*.csv\""), "{e}");
}

#[test]
fn file_config_round_trips() {
    let toml_text = r#"
kind = "file"
folder = "imports/school"
watch_secs = 60
files = [
  { format = "census_pupils_csv", name = "pupils*.csv" },
  { format = "census_attendance_csv", name = "attendance*.csv" },
]
"#;
    let config: weft_adapters::AdapterConfig = toml_from(toml_text);
    assert_eq!(config.kind(), "file");
    let back: weft_adapters::AdapterConfig =
        serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
    assert_eq!(back, config);
}

fn toml_from(text: &str) -> weft_adapters::AdapterConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn an_oversized_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let pupils = dir.path().join("pupils.csv");
    std::fs::write(&pupils, "UPN,Surname\nB801200005001,Khan\n").unwrap();
    let mut config = FileConfig {
        folder: dir.path().to_path_buf(),
        files: vec![FileSpec {
            format: FileFormat::CensusPupilsCsv,
            name: "pupils*.csv".into(),
        }],
        watch_secs: 0,
        limits: Limits {
            file_bytes: 1024,
            ..Limits::default()
        },
    };
    assert_eq!(file::collect(&config).unwrap()[0].bytes.len(), 31);
    // A sparse file claims a gigabyte without holding it: refused by its size alone.
    std::fs::File::create(&pupils)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let e = file::collect(&config).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pupils.csv: 1073741824 bytes, over the limit of 1024 bytes (limits.file_bytes)"
    );
    assert!(e.is_content());
    config.limits.file_bytes = 1 << 31;
    assert_eq!(file::survey(&config).unwrap()[0].bytes, 1 << 30);
}

#[test]
fn a_rejected_drop_is_set_aside_whole_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["header.csv", "episodes.csv", "notes.txt"] {
        std::fs::write(dir.path().join(name), name).unwrap();
    }
    let config = FileConfig {
        folder: dir.path().to_path_buf(),
        files: vec![
            FileSpec {
                format: FileFormat::Ssda903HeaderCsv,
                name: "header.csv".into(),
            },
            FileSpec {
                format: FileFormat::Ssda903EpisodesCsv,
                name: "episodes.csv".into(),
            },
        ],
        watch_secs: 60,
        limits: Limits::default(),
    };
    let names: Vec<String> = file::survey(&config)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["header.csv", "episodes.csv"]);
    let reason = "episodes.csv line 7 column decom: not a date (expected YYYY-MM-DD or DD/MM/YYYY)";
    let first = file::set_aside(&config, &names, reason).unwrap();
    let second = file::set_aside(&config, &[], reason).unwrap();
    assert_ne!(first, second, "each rejection gets a folder of its own");
    assert_eq!(first.parent(), Some(dir.path().join("rejected").as_path()));
    let why = std::fs::read_to_string(first.join("REJECTED.txt")).unwrap();
    assert!(why.contains(reason), "{why}");
    for name in &names {
        assert!(!dir.path().join(name).exists());
        assert_eq!(std::fs::read_to_string(first.join(name)).unwrap(), *name);
    }
    // Files the configuration does not name stay where they are, and the folder now holds an
    // incomplete drop rather than the rejected one.
    assert!(dir.path().join("notes.txt").exists());
    assert!(matches!(
        file::survey(&config),
        Err(file::ImportError::Missing { .. })
    ));
}
