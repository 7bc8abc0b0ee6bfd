//! Deliveries for the data administrator: the durable outbox's dead letters (deliveries that ran
//! out of attempts), and pending or delivered ones, where each stands — never what it carries —
//! with a retry for a dead one. The same functions as `GET /v1/outbox` and
//! `POST /v1/outbox/{id}/retry` ([`crate::write::inbox`]): data administrators only, audited.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::delivery::outbox::DeliveryStatus;
use crate::gateway::Gateway;
use crate::web::render::{self, Page};
use crate::web::session::{Posted, SignedIn};
use crate::write::inbox;

/// How many deliveries a page lists (the API's page limit).
const LIMIT: u32 = 500;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/admin/deliveries", get(list))
        .route("/admin/deliveries/{id}/retry", post(retry))
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    retried: Option<String>,
}

#[derive(Serialize)]
struct Tab {
    state: &'static str,
    label: &'static str,
    current: bool,
}

#[derive(Serialize)]
struct Line {
    id: String,
    what: String,
    recipient: String,
    channel: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: String,
    when: String,
    dead: bool,
}

fn time(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|t| t.format("%-d %b %Y %H:%M").to_string())
        .unwrap_or_else(|_| t.to_string())
}

fn line(d: DeliveryStatus) -> Line {
    let when = match d.state.as_str() {
        "delivered" => format!(
            "Delivered {}",
            d.delivered_at.as_deref().map(time).unwrap_or_default()
        ),
        "pending" => format!("Next attempt {}", time(&d.next_attempt_at)),
        _ => "No more attempts".into(),
    };
    Line {
        dead: d.state == "dead",
        what: d.topic.replace('_', " "),
        channel: match &d.webhook {
            Some(w) => format!("Webhook {w}"),
            None => "Inbox".into(),
        },
        id: d.id,
        recipient: d.recipient,
        state: d.state,
        attempts: d.attempts,
        last_error: d.last_error,
        created_at: time(&d.created_at),
        when,
    }
}

async fn list(State(gw): State<Gateway>, who: SignedIn, Query(q): Query<ListQuery>) -> Response {
    // Dead letters first: they are what needs a person.
    let state = match q.state.as_deref() {
        None | Some("") => Some("dead"),
        Some("all") => None,
        Some(s) => Some(s),
    };
    match inbox::outbox(&gw, &who.principal, state, Some(LIMIT)).await {
        Ok(rows) => {
            let lines: Vec<Line> = rows.into_iter().map(line).collect();
            let tabs: Vec<Tab> = [
                ("dead", "Dead letters"),
                ("pending", "Waiting to be sent"),
                ("delivered", "Delivered"),
                ("all", "All"),
            ]
            .into_iter()
            .map(|(s, label)| Tab {
                state: s,
                label,
                current: state.unwrap_or("all") == s,
            })
            .collect();
            let heading = tabs
                .iter()
                .find(|t| t.current)
                .map(|t| t.label)
                .unwrap_or("Deliveries");
            Page::new("deliveries.html", "Deliveries", &who)
                .with("tabs", tabs)
                .with("heading", heading)
                .with("lines", lines)
                .with("limit", LIMIT)
                .with("retried", q.retried.is_some())
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn retry(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Response {
    match inbox::retry(&gw, &posted.who.principal, &id).await {
        Ok(()) => Redirect::to("/admin/deliveries?retried=1").into_response(),
        Err(e) => render::error_page(Some(&posted.who), &e),
    }
}
