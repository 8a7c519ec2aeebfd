//! Email: building and sending the mails the person receives.
