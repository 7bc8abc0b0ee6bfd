//! The master child index as CSV, for data teams and audits: which child each source record is
//! linked to, how, and how sure the matcher was. One row per source record, in source and
//! local-id order, so two exports of the same index are byte-identical and can be diffed.
//!
//! The export discloses which records of which agencies belong to one child, so it is a read
//! of protected data like any other: it is audited before any of it is handed back, and if the
//! entry cannot be written nothing is.

use chrono::Utc;
use serde_json::json;
use sqlx::Row;

use crate::foundation::audit::{self, Entry};
use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::foundation::store::Store;

const ACTION: &str = "index_export";

/// The header row; the columns the issue and the README name.
pub const HEADER: [&str; 6] = [
    "source",
    "local_id",
    "child_id",
    "link_method",
    "probability",
    "model_version",
];

/// Who exports, and why: a command-line export is attributed to the operator who ran it, as
/// an API read is to its practitioner.
#[derive(Debug, Clone)]
pub struct Operator {
    pub user: String,
    /// Free text the operator gives (a data request's reference, an audit's name).
    pub reason: Option<String>,
}

/// What to export: every source (empty), or only these.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub sources: Vec<String>,
}

/// An export, audited: the CSV text and how many records it holds.
#[derive(Debug)]
pub struct Export {
    pub csv: Vec<u8>,
    pub rows: usize,
    /// The audit entry's place in the chain.
    pub audit_seq: i64,
}

/// One record's current link: the active row of `match_links` where there is one; a record
/// linked before links had rows of their own shows the method `source_records` kept, with no
/// probability or model.
const QUERY: &str = "SELECT r.source, r.local_id, r.child_id, \
     COALESCE(l.method, r.link_method) AS method, l.probability, l.model_version \
     FROM source_records r \
     LEFT JOIN match_links l ON l.source = r.source AND l.local_id = r.local_id \
       AND l.status = 'active' \
     ORDER BY r.source, r.local_id";

/// The index as CSV (header first), audited under `who` before it is returned.
pub async fn index_export(
    store: &Store,
    who: &Operator,
    selection: &Selection,
) -> Result<Export, Error> {
    if who.user.trim().is_empty() {
        return Err(Error::invalid(
            "operator: name who is exporting (--operator or WEFT_OPERATOR)",
        ));
    }
    let rows = sqlx::query(QUERY)
        .fetch_all(&store.pool)
        .await
        .map_err(|e| Error::Internal(format!("reading the index: {e}")))?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| Error::Internal(format!("writing CSV: {e}"));
    out.write_record(HEADER).map_err(csv_error)?;
    let mut written = 0usize;
    for row in &rows {
        let source: String = row.try_get("source").map_err(internal)?;
        if !selection.sources.is_empty() && !selection.sources.contains(&source) {
            continue;
        }
        let local_id: String = row.try_get("local_id").map_err(internal)?;
        let child: Option<String> = row.try_get("child_id").map_err(internal)?;
        let method: Option<String> = row.try_get("method").map_err(internal)?;
        let probability: Option<f64> = row.try_get("probability").map_err(internal)?;
        let model: Option<String> = row.try_get("model_version").map_err(internal)?;
        out.write_record([
            source,
            local_id,
            child.unwrap_or_default(),
            method.unwrap_or_default(),
            probability.map(|p| p.to_string()).unwrap_or_default(),
            model.unwrap_or_default(),
        ])
        .map_err(csv_error)?;
        written += 1;
    }
    let csv = out
        .into_inner()
        .map_err(|e| Error::Internal(format!("writing CSV: {e}")))?;

    let entry = Entry {
        at: Utc::now(),
        user: who.user.trim().to_string(),
        agency: "weft".into(),
        role: "operator".into(),
        action: ACTION.into(),
        child: None,
        purpose: Some(Purpose::Audit.as_str().into()),
        outcome: "exported".into(),
        detail: json!({
            "rows": written,
            "columns": HEADER,
            "sources": selection.sources,
            "reason": who.reason,
        }),
    };
    let audit_seq = async {
        let mut tx = store.begin_write().await?;
        let seq = audit::chain(&mut tx, &[&entry]).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(seq)
    }
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "index export not audited; nothing exported");
        crate::foundation::metrics::AUDIT_FAILURES.inc();
        Error::AuditUnavailable
    })?;
    Ok(Export {
        csv,
        rows: written,
        audit_seq,
    })
}

fn internal(e: sqlx::Error) -> Error {
    Error::Internal(format!("reading the index: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::resolve::linkage::{link_history, Matcher};
    use crate::pipeline::resolve::Index;
    use weft_adapters::{Demographics, Identifier, SourceRecord};

    fn rec(id: &str, nhs: Option<&str>) -> SourceRecord {
        SourceRecord {
            local_id: id.into(),
            identifiers: nhs
                .map(|n| Identifier::new("nhs_number", n))
                .into_iter()
                .collect(),
            demographics: Demographics {
                given_name: Some("Eleanor".into()),
                family_name: Some("Thompson".into()),
                birth_date: Some("2016-06-21".into()),
                sex: Some("female".into()),
                postcode: Some("WT3 5QP".into()),
                ..Demographics::default()
            },
            score: None,
            restricted: false,
        }
    }

    fn analyst() -> Operator {
        Operator {
            user: "data-team analyst".into(),
            reason: Some("DR-2026-114".into()),
        }
    }

    async fn exports(store: &Store) -> Vec<(String, String, String, String)> {
        sqlx::query(
            "SELECT user_id, role, outcome, detail FROM audit_log \
             WHERE action = 'index_export' ORDER BY seq",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get("user_id").unwrap(),
                r.try_get("role").unwrap(),
                r.try_get("outcome").unwrap(),
                r.try_get("detail").unwrap(),
            )
        })
        .collect()
    }

    #[tokio::test]
    async fn exports_every_records_current_link_and_audits_the_export() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::with_matcher(store.clone(), Matcher::builtin());
        let (child, _) = index
            .upsert("health", &rec("h1", Some("9000000009")))
            .await
            .unwrap();
        index
            .upsert("school", &rec("s1", Some("9000000009")))
            .await
            .unwrap();
        index.upsert("police", &rec("p1", None)).await.unwrap();
        // A record linked before links had rows of their own: its method is the one kept
        // beside it, with no probability or model.
        sqlx::query("INSERT INTO children (id, created_at) VALUES ('c-legacy', '2024-01-01')")
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO source_records (source, local_id, child_id, identifiers, demographics, \
             link_method, updated_at) VALUES ('archive', 'a,1', 'c-legacy', '[]', '{}', \
             'demographics', '2024-01-01')",
        )
        .execute(&store.pool)
        .await
        .unwrap();

        let police = link_history(&index, &child)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .find(|l| l.source == "police" && l.status == "active")
            .expect("the police record is linked to the child");
        let p = police
            .probability
            .expect("a scored link has its probability");
        let version = police.model_version.clone().expect("and its model");
        assert_eq!(version, Matcher::builtin().model.version);

        let export = index_export(&store, &analyst(), &Selection::default())
            .await
            .unwrap();
        let expected = format!(
            "source,local_id,child_id,link_method,probability,model_version\n\
             archive,\"a,1\",c-legacy,demographics,,\n\
             health,h1,{child},new,,\n\
             police,p1,{child},{method},{p},{version}\n\
             school,s1,{child},identifier:nhs_number,,\n",
            method = police.method,
        );
        assert_eq!(String::from_utf8(export.csv).unwrap(), expected);
        assert_eq!(export.rows, 4);

        let only = index_export(
            &store,
            &analyst(),
            &Selection {
                sources: vec!["school".into()],
            },
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(only.csv).unwrap(),
            format!(
                "source,local_id,child_id,link_method,probability,model_version\n\
                 school,s1,{child},identifier:nhs_number,,\n"
            )
        );
        assert!(only.audit_seq > export.audit_seq);

        let audited = exports(&store).await;
        assert_eq!(audited.len(), 2, "each export is one entry");
        let (user, role, outcome, detail) = &audited[0];
        assert_eq!(
            (user.as_str(), role.as_str(), outcome.as_str()),
            ("data-team analyst", "operator", "exported")
        );
        let detail: serde_json::Value = serde_json::from_str(detail).unwrap();
        assert_eq!(detail["rows"], 4);
        assert_eq!(detail["reason"], "DR-2026-114");
        let detail: serde_json::Value = serde_json::from_str(&audited[1].3).unwrap();
        assert_eq!(detail["sources"], json!(["school"]));
        assert!(crate::foundation::audit::verify(&store)
            .await
            .unwrap()
            .problem
            .is_none());
    }

    #[tokio::test]
    async fn nothing_is_exported_unattributed_or_unaudited() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::with_matcher(store.clone(), Matcher::builtin());
        index
            .upsert("health", &rec("h1", Some("9000000009")))
            .await
            .unwrap();
        let nobody = Operator {
            user: "  ".into(),
            reason: None,
        };
        assert!(matches!(
            index_export(&store, &nobody, &Selection::default()).await,
            Err(Error::Invalid { .. })
        ));
        assert!(exports(&store).await.is_empty());

        // With the audit log out of reach, the export fails closed.
        sqlx::query("DROP TABLE audit_head")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(
            index_export(&store, &analyst(), &Selection::default()).await,
            Err(Error::AuditUnavailable)
        ));
    }
}
