//! What `file` sources serve: the records last imported into the gateway's database
//! ([`crate::write::imports`]), read by the `file` adapter as its store.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;
use weft_adapters::file::{ImportStore, Imported};
use weft_adapters::AdapterError;

use crate::foundation::store::Store;

/// The import store over the gateway's database, as the `file` adapter reads it.
pub struct DbImports {
    store: Store,
}

impl DbImports {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self { store })
    }
}

fn db_error(e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Database(e.to_string())
}

#[async_trait]
impl ImportStore for DbImports {
    async fn records(&self, source: &str) -> Result<Vec<Imported>, AdapterError> {
        let rows =
            sqlx::query("SELECT record FROM import_records WHERE source = $1 ORDER BY local_id")
                .bind(source)
                .fetch_all(&self.store.pool)
                .await
                .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("record").map_err(db_error)?;
                serde_json::from_str(&text).map_err(db_error)
            })
            .collect()
    }

    async fn record(&self, source: &str, local_id: &str) -> Result<Option<Imported>, AdapterError> {
        let row =
            sqlx::query("SELECT record FROM import_records WHERE source = $1 AND local_id = $2")
                .bind(source)
                .bind(local_id)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(db_error)?;
        row.map(|r| {
            let text: String = r.try_get("record").map_err(db_error)?;
            serde_json::from_str(&text).map_err(db_error)
        })
        .transpose()
    }
}
