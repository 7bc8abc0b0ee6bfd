//! Changes to the consent register, and reading it: a practitioner who takes consent from a
//! family records it (or a refusal), or its withdrawal; the IG officer and those practitioners
//! read a child's register. Each change commits with its audit entry, or not at all. The
//! register itself, as policy reads it, is [`crate::pipeline::authorise::consent`].

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::foundation::domain::Role;
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::{entry, Gateway};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::consent::{
    from_row, load, Body, Consent, ConsentStatus, Grantor, Period, Provision,
};

/// The request to record a consent or a refusal (`schemas/consent.schema.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsent {
    #[serde(rename = "resourceType")]
    _resource_type: String,
    status: ConsentStatus,
    grantor: Grantor,
    period: Period,
    provision: Vec<Provision>,
}

/// Practitioners who take consent from families.
fn may_record(role: Role) -> bool {
    matches!(
        role,
        Role::SocialWorker | Role::Dsl | Role::EducationWelfareOfficer | Role::HealthPractitioner
    )
}

/// Refuses (audited) unless the child exists and the practitioner has a relationship with
/// them: the register follows the same rule as the view. IG officers read the register for
/// oversight without one; they never change it.
async fn related(
    gw: &Gateway,
    who: &Principal,
    child: &str,
    action: &str,
) -> Result<serde_json::Value, Error> {
    let refused = match gw.relationships(who, child).await? {
        None => Error::NotFound("no child with that id"),
        Some(r) if !r.is_empty() => {
            return serde_json::to_value(&r).map_err(|e| Error::Internal(e.to_string()))
        }
        Some(_) if who.role == Role::IgOfficer && action == "consent_list" => {
            return Ok(json!("ig_oversight"))
        }
        Some(_) => crate::pipeline::authorise::relate::refusal(),
    };
    Err(gw.refuse(who, action, Some(child), None, refused).await)
}

/// A child's consents and refusals.
pub async fn list(gw: &Gateway, who: &Principal, child: &str) -> Result<Vec<Consent>, Error> {
    const ACTION: &str = "consent_list";
    if !(may_record(who.role) || who.role == Role::IgOfficer) {
        let e = Error::Forbidden(
            "consent records are open to practitioners who take consent and IG officers",
        );
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    }
    let relationship = related(gw, who, child, ACTION).await?;
    let consents = load(&gw.store, child).await?;
    gw.record(
        who,
        ACTION,
        Some(child),
        None,
        "shown",
        json!({"returned": consents.items.len(), "relationship": relationship}),
    )
    .await?;
    Ok(consents.items)
}

/// Records a consent (or a refusal) given for a child, from the request in `body`.
pub async fn record(
    gw: &Gateway,
    who: &Principal,
    child: &str,
    body: &[u8],
) -> Result<Consent, Error> {
    const ACTION: &str = "consent_record";
    if !may_record(who.role) {
        let e = Error::Forbidden("only practitioners who take consent may record it");
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    }
    let new = match parse(gw, body) {
        Ok(n) => n,
        Err(e) => return Err(gw.refuse(who, ACTION, Some(child), None, e).await),
    };
    let relationship = related(gw, who, child, ACTION).await?;
    let now = Utc::now().to_rfc3339();
    let consent = Consent {
        id: uuid::Uuid::new_v4().to_string(),
        child: child.to_string(),
        status: new.status,
        grantor: new.grantor,
        period: new.period,
        provision: new.provision,
        recorded_by: who.user.clone(),
        recorded_at: now.clone(),
        updated_at: now,
        withdrawn_reason: None,
    };
    let body = serde_json::to_string(&Body {
        grantor: consent.grantor.clone(),
        period: consent.period.clone(),
        provision: consent.provision.clone(),
    })
    .map_err(|e| Error::Internal(e.to_string()))?;
    let status = status_text(consent.status);
    let mut tx = gw.store.begin_write().await?;
    sqlx::query(
        "INSERT INTO consents (id, child_id, status, body, recorded_by, recorded_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&consent.id)
    .bind(child)
    .bind(status)
    .bind(&body)
    .bind(&consent.recorded_by)
    .bind(&consent.recorded_at)
    .bind(&consent.updated_at)
    .execute(&mut *tx)
    .await?;
    let detail = json!({"consent": consent.id, "status": status,
        "purposes": consent.provision.iter().flat_map(|p| p.purpose.iter().map(|x| x.as_str())).collect::<Vec<_>>(),
        "categories": consent.provision.iter().flat_map(|p| p.category.clone()).collect::<Vec<_>>(),
        "relationship": relationship});
    gw.commit(
        tx,
        &[entry(who, ACTION, Some(child), None, "recorded", detail)],
    )
    .await?;
    Ok(consent)
}

fn status_text(s: ConsentStatus) -> &'static str {
    match s {
        ConsentStatus::Active => "active",
        ConsentStatus::Withdrawn => "withdrawn",
        ConsentStatus::Refused => "refused",
    }
}

fn parse(gw: &Gateway, body: &[u8]) -> Result<NewConsent, Error> {
    let value = validated(body, |v| gw.schemas.consent_errors(v), "consent")?;
    let new: NewConsent =
        serde_json::from_value(value).map_err(|e| Error::unprocessable("", e.to_string()))?;
    if new.status == ConsentStatus::Withdrawn {
        return Err(Error::field(
            "/status",
            "record a consent as active or refused; withdraw it with …/withdraw",
        ));
    }
    if let Some(end) = new.period.end {
        if end < new.period.start {
            return Err(Error::unprocessable("/period/end", "ends before it starts"));
        }
    }
    Ok(new)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Withdrawal {
    reason: String,
}

/// Withdraws a consent, with the reason in `body` (`{"reason": …}`). Takes effect on the next
/// request.
pub async fn withdraw(
    gw: &Gateway,
    who: &Principal,
    child: &str,
    consent_id: &str,
    body: &[u8],
) -> Result<Consent, Error> {
    const ACTION: &str = "consent_withdraw";
    if !may_record(who.role) {
        let e = Error::Forbidden("only practitioners who take consent may record its withdrawal");
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    }
    let checked = validated(
        body,
        |v| gw.schemas.consent_withdrawal_errors(v),
        "withdrawal",
    )
    .and_then(|v| {
        serde_json::from_value::<Withdrawal>(v)
            .map_err(|e| Error::invalid(format!("withdrawal: {e}")))
    });
    let reason = match checked {
        Ok(w) => w.reason,
        Err(e) => return Err(gw.refuse(who, ACTION, Some(child), None, e).await),
    };
    let relationship = related(gw, who, child, ACTION).await?;
    let mut tx = gw.store.begin_write().await?;
    let before = sqlx::query(
        "SELECT id, child_id, status, body, recorded_by, recorded_at, updated_at, withdrawn_reason \
         FROM consents WHERE id = $1 AND child_id = $2",
    )
    .bind(consent_id)
    .bind(child)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(before) = before else {
        drop(tx);
        let e = Error::NotFound("no such consent for this child");
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    };
    let mut consent = from_row(&before)?;
    if consent.status != ConsentStatus::Active {
        drop(tx);
        let e = Error::field("/status", "only an active consent can be withdrawn");
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    }
    let now = Utc::now().to_rfc3339();
    sqlx::query("UPDATE consents SET status = 'withdrawn', withdrawn_reason = $1, updated_at = $2 WHERE id = $3")
        .bind(&reason)
        .bind(&now)
        .bind(consent_id)
        .execute(&mut *tx)
        .await?;
    let detail =
        json!({"consent": consent_id, "status": "withdrawn", "relationship": relationship});
    gw.commit(
        tx,
        &[entry(who, ACTION, Some(child), None, "recorded", detail)],
    )
    .await?;
    consent.status = ConsentStatus::Withdrawn;
    consent.withdrawn_reason = Some(reason);
    consent.updated_at = now;
    Ok(consent)
}
