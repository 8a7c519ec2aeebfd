//! Email: building and sending the mails the person receives.

use serde::Deserialize;

/// The `email` section of the settings file (SMTP or a local Maildir).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EmailSettings {}
