//! The two ends of delivery a person sees: their inbox (concerns, progress on concerns they
//! sent, alerts, subscribed events), and, for a data administrator, the outbox's state — what is
//! pending, what is dead-lettered — with a retry.

use std::collections::HashMap;

use serde_json::json;

use crate::delivery::outbox::{DeliveryStatus, InboxItem};
use crate::foundation::domain::Role;
use crate::foundation::error::{page_limit, Error};
use crate::gateway::{entry, Gateway};
use crate::pipeline::authenticate::Principal;
use crate::write::concerns::{self, ConcernView};

/// Deliveries to `who` and to their role in their agency, oldest first: after the
/// `delivered_at` of the last item of a previous page, at most `limit` (default 100).
pub async fn inbox(
    gw: &Gateway,
    who: &Principal,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<Vec<InboxItem>, Error> {
    let limit = match page_limit(limit) {
        Ok(n) => n,
        Err(e) => return Err(gw.refuse(who, "inbox", None, None, e).await),
    };
    let items = visible_page(gw, who, after, limit).await?;
    let mut children: Vec<&str> = items.iter().filter_map(|i| i.child.as_deref()).collect();
    children.sort_unstable();
    children.dedup();
    let child = match children.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    gw.record(
        who,
        "inbox",
        child,
        None,
        "shown",
        json!({"returned": items.len(), "children": children,
               "deliveries": items.iter().map(|i| &i.delivery_id).collect::<Vec<_>>()}),
    )
    .await?;
    Ok(items)
}

/// Up to `limit` items of `who`'s inbox after `after`, each as they may see it: an item about
/// a concern tells no more than the concern's own page would
/// ([`crate::write::concerns::redact_item`]). Items left out do not shorten the page: further
/// items are read until it is full or the inbox ends.
async fn visible_page(
    gw: &Gateway,
    who: &Principal,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<InboxItem>, Error> {
    let mut concerns: HashMap<String, Option<ConcernView>> = HashMap::new();
    let mut out = Vec::new();
    let mut after = after.map(String::from);
    loop {
        let page = crate::delivery::outbox::inbox(
            &gw.store,
            &who.agency,
            &who.user,
            who.role,
            after.as_deref(),
            limit,
        )
        .await?;
        let full = u32::try_from(page.len()).unwrap_or(u32::MAX) >= limit;
        after = page.last().map(|i| i.delivered_at.clone());
        for item in page {
            if !CONCERN_TOPICS.contains(&item.topic.as_str()) {
                out.push(item);
                continue;
            }
            if !concerns.contains_key(&item.subject) {
                let loaded = concerns::load(gw, &item.subject).await?;
                concerns.insert(item.subject.clone(), loaded);
            }
            // A delivery whose concern cannot be read is left out: nothing is shown unjudged.
            let Some(Some(concern)) = concerns.get(&item.subject) else {
                continue;
            };
            out.extend(concerns::item_for_viewer(gw, who, concern, item));
        }
        if !full || u32::try_from(out.len()).unwrap_or(u32::MAX) >= limit {
            break;
        }
    }
    out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(out)
}

/// Inbox topics that carry a concern or a step on one (`subject` is the concern's id).
const CONCERN_TOPICS: &[&str] = &["concern", "concern_update", "concern_addendum"];

/// How many items of `who`'s inbox are unread. A count, naming no child: not audited.
pub async fn unread(gw: &Gateway, who: &Principal) -> Result<i64, Error> {
    Ok(crate::delivery::outbox::unread(&gw.store, &who.agency, &who.user, who.role).await?)
}

/// Marks an item of `who`'s inbox read (for them alone, when it went to their role).
pub async fn mark_read(gw: &Gateway, who: &Principal, delivery: &str) -> Result<(), Error> {
    const ACTION: &str = "inbox_read";
    let mut tx = gw.store.begin_write().await?;
    let now = crate::delivery::outbox::ts(chrono::Utc::now());
    let theirs = crate::delivery::outbox::mark_read(
        &mut tx,
        &who.agency,
        &who.user,
        who.role,
        delivery,
        &now,
    )
    .await?;
    if !theirs {
        drop(tx);
        let e = Error::NotFound("no item with that id in your inbox");
        return Err(gw.refuse(who, ACTION, None, None, e).await);
    }
    let detail = json!({"delivery": delivery});
    gw.commit(tx, &[entry(who, ACTION, None, None, "read", detail)])
        .await
}

async fn admin_only(gw: &Gateway, p: &Principal, action: &str) -> Result<(), Error> {
    if p.role == Role::DataAdmin {
        Ok(())
    } else {
        let e = Error::Forbidden("the outbox is open to data administrators only");
        Err(gw.refuse(p, action, None, None, e).await)
    }
}

/// Deliveries and where they stand (`pending`, `delivered`, `dead`; all when `None`) — never
/// what they carry. Data administrators only.
pub async fn outbox(
    gw: &Gateway,
    who: &Principal,
    state: Option<&str>,
    limit: Option<u32>,
) -> Result<Vec<DeliveryStatus>, Error> {
    const ACTION: &str = "outbox_list";
    admin_only(gw, who, ACTION).await?;
    if let Some(s) = state {
        if !matches!(s, "pending" | "delivered" | "dead") {
            let e = Error::field("/state", "one of pending, delivered, dead");
            return Err(gw.refuse(who, ACTION, None, None, e).await);
        }
    }
    let limit = match page_limit(limit) {
        Ok(n) => n,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let rows = gw.outbox.list(state, limit).await?;
    gw.record(
        who,
        ACTION,
        None,
        None,
        "shown",
        json!({"state": state, "returned": rows.len()}),
    )
    .await?;
    Ok(rows)
}

/// Puts a dead-lettered delivery back in the queue with fresh attempts.
pub async fn retry(gw: &Gateway, who: &Principal, id: &str) -> Result<(), Error> {
    const ACTION: &str = "outbox_retry";
    admin_only(gw, who, ACTION).await?;
    let mut tx = gw.store.begin_write().await?;
    if !gw.outbox.retry(&mut tx, id).await? {
        drop(tx);
        let e = Error::NotFound("no dead delivery with that id");
        return Err(gw.refuse(who, ACTION, None, None, e).await);
    }
    let detail = json!({"delivery": id});
    gw.commit(tx, &[entry(who, ACTION, None, None, "queued", detail)])
        .await?;
    gw.outbox.wake();
    Ok(())
}
