//! Notification delivery without AWS: which endpoints a notification goes to and what holds
//! it back ([`routing`]), what each kind of endpoint receives ([`format`]), how generic
//! webhooks are signed ([`sign`]), and the HTTP delivery itself ([`deliver`]) behind an SSRF
//! guard ([`ssrf`]).

pub mod deliver;
pub mod endpoint;
pub mod format;
pub mod record;
pub mod routing;
pub mod sign;
pub mod ssrf;
