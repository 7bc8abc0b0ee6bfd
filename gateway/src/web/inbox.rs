//! The inbox: concerns, progress on concerns the reader raised, alerts and notifications, each
//! linking to its child and its concern, unread ones marked; from [`crate::write::inbox`], as
//! `GET /v1/inbox` returns them.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::Gateway;
use crate::web::render::{self, Page};
use crate::web::session::{Posted, SignedIn};
use crate::write::inbox;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/inbox", get(list))
        .route("/inbox/{id}/read", post(read))
}

#[derive(Serialize)]
struct Item {
    id: String,
    topic: String,
    what: String,
    delivered_at: String,
    read: bool,
    child: Option<String>,
    concern: Option<String>,
}

fn describe(payload: &Value, topic: &str) -> (String, Option<String>) {
    let data = payload.get("data").unwrap_or(&Value::Null);
    let word = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .map(|s| s.replace('_', " "))
    };
    let concern = data
        .get("concern")
        .and_then(|c| {
            c.as_str()
                .map(String::from)
                .or_else(|| c.get("id")?.as_str().map(String::from))
        })
        .or_else(|| {
            data.get("concern_id")
                .and_then(Value::as_str)
                .map(String::from)
        });
    let what = match topic {
        "concern" => format!(
            "Concern: {}, {}",
            word("category").unwrap_or_else(|| "safeguarding".into()),
            word("urgency").unwrap_or_default()
        ),
        "concern_update" | "concern_status" => format!(
            "Your concern moved on: {}",
            word("state").unwrap_or_else(|| "updated".into())
        ),
        "notification" => format!(
            "Notification: {}",
            word("notification").unwrap_or_else(|| "notice".into())
        ),
        "alert" => format!("Alert: {}", word("alert").unwrap_or_else(|| "alert".into())),
        other => other.replace('_', " "),
    };
    (what, concern)
}

async fn list(State(gw): State<Gateway>, who: SignedIn) -> Response {
    match inbox::inbox(&gw, &who.principal, None, Some(1000)).await {
        Ok(items) => {
            let mut items: Vec<Item> = items
                .into_iter()
                .map(|i| {
                    let (what, concern) = describe(&i.payload, &i.topic);
                    Item {
                        id: i.delivery_id,
                        what,
                        topic: i.topic,
                        delivered_at: i.delivered_at,
                        read: i.read,
                        child: i.child,
                        concern,
                    }
                })
                .collect();
            items.reverse();
            let unread = items.iter().filter(|i| !i.read).count();
            Page::new("inbox.html", "Inbox", &who)
                .with("items", items)
                .with("unread", unread)
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn read(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Response {
    match inbox::mark_read(&gw, &posted.who.principal, &id).await {
        Ok(()) => Redirect::to("/inbox").into_response(),
        Err(e) => render::error_page(Some(&posted.who), &e),
    }
}
