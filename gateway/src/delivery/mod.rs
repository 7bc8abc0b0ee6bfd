//! Getting concerns, alerts and notifications to the people they are for: [`routing`] decides
//! who, the durable [`outbox`] delivers, to signed webhooks or to inboxes.

pub mod outbox;
pub mod routing;
