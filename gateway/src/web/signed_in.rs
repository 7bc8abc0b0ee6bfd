//! Who a page is for: the signed-in practitioner a session names. Only the type lives here, so
//! that rendering a page (which names the person) and finding the session (which renders the
//! pages for its errors) do not depend on each other; the extractors are in
//! [`crate::web::session`].

use crate::pipeline::authenticate::Principal;
use crate::write::sessions::Session;

/// A page's signed-in practitioner.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub principal: Principal,
    pub name: String,
    pub csrf: String,
    pub(crate) session: Session,
}
