//! Releasing a deferred access into subject access reports: an IG officer decides the police
//! investigation or section 47 enquiry it was made for no longer needs it kept out. The release
//! is an audit entry of its own ([`crate::read::sar::RELEASE`]); reports read it from there.

use serde_json::json;

use crate::foundation::domain::{Purpose, Role};
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::read::sar::{is_deferred, RELEASE};

/// Releases audit entry `entry` (an access to `child` held out of reports). IG officers only,
/// within their scope; anything else is answered as if no such deferral existed.
pub async fn release(gw: &Gateway, who: &Principal, child: &str, entry: i64) -> Result<(), Error> {
    if who.role != Role::IgOfficer {
        let e =
            Error::Forbidden("deferred accesses are released by information-governance officers");
        return Err(gw.refuse(who, RELEASE, Some(child), None, e).await);
    }
    if !is_deferred(gw, who, child, entry).await? {
        let e = Error::NotFound("no deferred access to this child with that entry");
        return Err(gw
            .refuse(who, RELEASE, Some(child), Some(Purpose::Audit), e)
            .await);
    }
    gw.record(
        who,
        RELEASE,
        Some(child),
        Some(Purpose::Audit),
        "released",
        json!({"entry": entry}),
    )
    .await
}
