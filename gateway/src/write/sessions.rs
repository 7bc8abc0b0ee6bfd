//! Signed-in browsers. Signing in (through the agency's OpenID provider, or the development
//! page) makes a session; every page then finds its practitioner through it. A session is a row
//! keyed by the SHA-256 of a random cookie value, so the store alone signs nobody in; it keeps
//! the user, agency and role it was made with, and each use turns them into a
//! [`Principal`] through the same check a token's claims pass ([`Verifier::principal_of`]), so a
//! session for an agency or role the configuration no longer knows stops working. It ends when
//! unused for `web.session_idle_secs`, `web.session_absolute_secs` after sign-in, or at sign-out.
//! Signing in and out are audited.
//!
//! [`Verifier::principal_of`]: crate::pipeline::authenticate::Verifier::principal_of

use base64::Engine;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::foundation::error::Error;
use crate::gateway::{entry, Gateway};
use crate::pipeline::authenticate::Principal;

/// A signed-in browser, as a page sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// What pages call the person (their name from the identity provider).
    pub name: String,
    /// The synchroniser token every form of this session must carry.
    pub csrf: String,
    id_hash: String,
}

/// What signing in returns: the value for the cookie (never stored) and the session.
pub struct NewSession {
    pub cookie: String,
    pub session: Session,
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

/// Signs `who` in: a new session, and its audit entry, in one transaction. `how` says how they
/// proved who they are (`oidc`, `dev`).
pub async fn sign_in(
    gw: &Gateway,
    who: &Principal,
    name: &str,
    how: &str,
) -> Result<NewSession, Error> {
    let cookie = random_token();
    let csrf = random_token();
    let id_hash = hash(&cookie);
    let now = chrono::Utc::now().timestamp();
    let web = &gw.config.web;
    let expires = now.saturating_add(i64::try_from(web.session_absolute_secs).unwrap_or(i64::MAX));
    let mut tx = gw.store.begin_write().await?;
    // Expired sessions are swept as new ones are made, so the table holds only live ones and a
    // few dead since the last sign-in.
    let idle = i64::try_from(web.session_idle_secs).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
        .bind(now)
        .bind(now.saturating_sub(idle))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (id_hash, user_id, agency, role, display_name, csrf, \
         created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id_hash)
    .bind(&who.user)
    .bind(&who.agency)
    .bind(who.role.as_str())
    .bind(name)
    .bind(&csrf)
    .bind(now)
    .bind(now)
    .bind(expires)
    .execute(&mut *tx)
    .await?;
    let detail = json!({"method": how, "expires_at": expires});
    gw.commit(
        tx,
        &[entry(who, "sign_in", None, None, "signed_in", detail)],
    )
    .await?;
    Ok(NewSession {
        cookie,
        session: Session {
            principal: who.clone(),
            name: name.to_string(),
            csrf,
            id_hash,
        },
    })
}

/// The session a cookie names, if it is live: not idle past the idle timeout, not past its
/// absolute end, and for an agency and role the configuration knows. Using it moves its idle
/// clock on.
pub async fn session(gw: &Gateway, cookie: &str) -> Result<Option<Session>, Error> {
    let id_hash = hash(cookie);
    let now = chrono::Utc::now().timestamp();
    let idle = i64::try_from(gw.config.web.session_idle_secs).unwrap_or(i64::MAX);
    let row = sqlx::query(
        "SELECT user_id, agency, role, display_name, csrf, last_seen_at, expires_at \
         FROM web_sessions WHERE id_hash = $1",
    )
    .bind(&id_hash)
    .fetch_optional(&gw.store.pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let last_seen: i64 = row.try_get("last_seen_at")?;
    let expires: i64 = row.try_get("expires_at")?;
    if now >= expires || now.saturating_sub(last_seen) >= idle {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(&id_hash)
            .execute(&gw.store.pool)
            .await?;
        return Ok(None);
    }
    let role: String = row.try_get("role")?;
    let principal =
        match gw
            .verifier
            .principal_of(row.try_get("user_id")?, row.try_get("agency")?, &role)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(reason = e.reason(), "session refused");
                return Ok(None);
            }
        };
    // The idle clock moves at most once a second, however many requests a page makes.
    if now > last_seen {
        sqlx::query("UPDATE web_sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(&id_hash)
            .execute(&gw.store.pool)
            .await?;
    }
    Ok(Some(Session {
        principal,
        name: row.try_get("display_name")?,
        csrf: row.try_get("csrf")?,
        id_hash,
    }))
}

/// Ends a session, with its audit entry.
pub async fn sign_out(gw: &Gateway, session: &Session) -> Result<(), Error> {
    let mut tx = gw.store.begin_write().await?;
    sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
        .bind(&session.id_hash)
        .execute(&mut *tx)
        .await?;
    let e = entry(
        &session.principal,
        "sign_out",
        None,
        None,
        "signed_out",
        json!({}),
    );
    gw.commit(tx, &[e]).await
}

/// Whether `given` is this session's CSRF token, compared in constant time.
pub fn csrf_matches(session: &Session, given: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a sign-in at the identity provider may take.
pub const LOGIN_TTL_SECS: i64 = 600;

/// Keeps a sign-in's nonce and PKCE verifier until the browser comes back with `state`.
pub async fn begin_login(
    gw: &Gateway,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> Result<(), Error> {
    let now = chrono::Utc::now().timestamp();
    let mut tx = gw.store.begin_write().await?;
    sqlx::query("DELETE FROM web_logins WHERE created_at <= $1")
        .bind(now - LOGIN_TTL_SECS)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO web_logins (state_hash, nonce, verifier, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash(state))
    .bind(nonce)
    .bind(verifier)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The nonce and verifier of the sign-in `state` began, once: the row is deleted as it is read,
/// so a replayed callback finds nothing.
pub async fn take_login(gw: &Gateway, state: &str) -> Result<Option<(String, String)>, Error> {
    let now = chrono::Utc::now().timestamp();
    let mut tx = gw.store.begin_write().await?;
    let row =
        sqlx::query("SELECT nonce, verifier, created_at FROM web_logins WHERE state_hash = $1")
            .bind(hash(state))
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::query("DELETE FROM web_logins WHERE state_hash = $1")
        .bind(hash(state))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let created: i64 = row.try_get("created_at")?;
    if now - created > LOGIN_TTL_SECS {
        return Ok(None);
    }
    Ok(Some((row.try_get("nonce")?, row.try_get("verifier")?)))
}
