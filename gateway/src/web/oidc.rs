//! Sign-in through the agency's OpenID Connect provider.

use axum::Router;

use crate::gateway::Gateway;

pub fn routes() -> Router<Gateway> {
    Router::new()
}
