//! The `file` adapter's readers over every education and LA-return sample in
//! `shared/data/samples/` (CIN census ×3, SSDA903 CSV and XML) and over generated CSV and CTF.

mod common;

use common::sample_path;
use serde_json::{json, Value};
use weft_adapters::file::{self, DroppedFile, FileConfig, FileFormat, FileSpec, Imported};

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
    let parsed =
        file::parse(&[sample("cin_census_liia_cin-2022.xml", FileFormat::CinXml)]).unwrap();
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
    let parsed = file::parse(&[sample(
        "cin_census_d2i_CIN_Census_2026.xml",
        FileFormat::CinXml,
    )])
    .unwrap();
    assert_eq!(parsed.records.len(), 2);
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
    assert!(
        parsed.warnings[0].contains("line 23")
            && parsed.warnings[0].contains("\"PersonBirthDate\"")
            && parsed.warnings[0].contains("<ChildIdentifiers>"),
        "{}",
        parsed.warnings[0]
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
    let parsed = file::parse(&[sample(
        "cin_census_d2i_fake_CIN_data.xml",
        FileFormat::CinXml,
    )])
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
    let parsed = file::parse(&[
        sample("ssda903_d2i_header.csv", FileFormat::Ssda903HeaderCsv),
        sample("ssda903_d2i_episodes.csv", FileFormat::Ssda903EpisodesCsv),
    ])
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
    let parsed =
        file::parse(&[sample("ssda903_d2i_fake_903.xml", FileFormat::Ssda903Xml)]).unwrap();
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
    let e = file::parse(&[cin]).unwrap_err().to_string();
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
    let e = file::parse(&[cin]).unwrap_err().to_string();
    assert!(e.contains("the file ends inside <"), "{e}");

    let mut eps = sample("ssda903_d2i_episodes.csv", FileFormat::Ssda903EpisodesCsv);
    eps.bytes.truncate(50_000);
    let e = file::parse(&[eps]).unwrap_err().to_string();
    assert!(e.contains("ssda903_d2i_episodes.csv line "), "{e}");

    let mut xml = sample("ssda903_d2i_fake_903.xml", FileFormat::Ssda903Xml);
    let text = String::from_utf8(xml.bytes).unwrap().replacen(
        "<DOB>28/07/2010</DOB>",
        "<DOB>28/13/2010</DOB>",
        1,
    );
    xml.bytes = text.into_bytes();
    let e = file::parse(&[xml]).unwrap_err().to_string();
    assert!(e.contains("<DOB>") && e.contains("28/13/2010"), "{e}");

    let mut cin = sample("cin_census_liia_cin-2022.xml", FileFormat::CinXml);
    let text = String::from_utf8(cin.bytes)
        .unwrap()
        .replace("<GenderCurrent>1<", "<GenderCurrent>7<");
    cin.bytes = text.into_bytes();
    let e = file::parse(&[cin]).unwrap_err().to_string();
    assert_eq!(
        e,
        "cin_census_liia_cin-2022.xml line 26 <GenderCurrent>: \"7\" is not a sex code (1/2/0/9 or M/F/U)"
    );
}

const CTF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<CTfile>
  <Header>
    <DocumentName>Common Transfer File</DocumentName>
    <CTFversion>24.0</CTFversion>
    <SourceSchool><LEA>801</LEA><Estab>2000</Estab><URN>100001</URN><SchoolName>Example Primary</SchoolName></SourceSchool>
  </Header>
  <CTFpupilData>
    <Pupil>
      <UPN>B801200005001</UPN>
      <Surname>Khan</Surname>
      <Forename>Sara</Forename>
      <DOB>2012-03-27</DOB>
      <Sex>F</Sex>
      <BasicDetails>
        <FormerUPN>P207000016049</FormerUPN>
        <NCyearActual>6</NCyearActual>
        <EnrolStatus>C</EnrolStatus>
        <InCare>TRUE</InCare>
      </BasicDetails>
      <LookedAfter><InCare>true</InCare><CareAuthority>801</CareAuthority></LookedAfter>
      <SENhistory>
        <SEN><StartDate>2019-09-01</StartDate><SENprovision>K</SENprovision></SEN>
        <SEN><StartDate>2022-01-10</StartDate><SENprovision>E</SENprovision></SEN>
      </SENhistory>
      <Address><BS7><PAON>12</PAON><Street>High Street</Street><Town>Bristol</Town><PostCode>BS1 4AA</PostCode></BS7></Address>
      <Attendance>
        <YearData><Year>2023</Year><SessionsPossible>380</SessionsPossible><SessionsAuthorised>10</SessionsAuthorised><SessionsUnauthorised>28</SessionsUnauthorised></YearData>
      </Attendance>
    </Pupil>
    <Pupil>
      <UPN>A801200005001</UPN>
      <Surname>Smith</Surname>
      <Forename>Jo</Forename>
      <DOB>2013-01-02</DOB>
      <Gender>M</Gender>
      <BasicDetails><InCare>0</InCare></BasicDetails>
    </Pupil>
  </CTFpupilData>
</CTfile>
"#;

#[test]
fn ctf_maps_identity_address_attendance_sen_and_care() {
    let parsed = file::parse(&[DroppedFile {
        name: "ctf.xml".into(),
        format: FileFormat::CtfXml,
        bytes: CTF.as_bytes().to_vec(),
    }])
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

    let truncated = &CTF[..CTF.find("<Attendance>").unwrap()];
    let e = file::parse(&[DroppedFile {
        name: "ctf.xml".into(),
        format: FileFormat::CtfXml,
        bytes: truncated.as_bytes().to_vec(),
    }])
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("ends inside <Pupil> opened on line 9"),
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
    };
    let files = file::collect(&config).unwrap();
    assert_eq!(
        files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["att_1.csv", "att_2.csv"]
    );
    let parsed = file::parse(&files).unwrap();
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
