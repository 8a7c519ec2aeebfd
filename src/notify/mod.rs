//! Email: building and sending the mails the person receives (voicemail, missed call, outage,
//! refused commit).
//!
//! The spool hands over a [`CallRecord`](crate::spool::CallRecord) and its transcript; this
//! module turns them into a MIME message (lettre) from the [`templates`] and delivers it by
//! SMTP (STARTTLS, implicit TLS or plain) or into a local Maildir, the embedded default. It
//! knows nothing of the spool's retries. Invariant: no caller-supplied string reaches a header
//! unencoded (control characters are removed, lettre encodes the rest), and the SMTP password
//! never appears in an error.

pub mod templates;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::settings::Secret;
use crate::spool::record::{format_duration, CallRecord, Outcome};
use crate::voicemail::Transcript;
pub use templates::{Overrides, Rendered, Templates};

/// The `email` section of the settings file (SMTP or a local Maildir).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    /// Sender address ("patchbay <phone@example.org>").
    pub from: String,
    /// Where the person's mails go.
    pub to: Vec<String>,
    /// Send through this server; without it, mails land in `maildir`.
    pub smtp: Option<SmtpSettings>,
    /// The local Maildir used when no SMTP server is set.
    pub maildir: PathBuf,
    /// Also mail missed calls (voicemails are always mailed).
    pub missed_calls: bool,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            from: "patchbay <patchbay@localhost>".to_owned(),
            to: vec!["me@localhost".to_owned()],
            smtp: None,
            maildir: PathBuf::from("mail"),
            missed_calls: true,
        }
    }
}

/// An SMTP submission server.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    /// Defaults to 587 (starttls), 465 (tls) or 25 (plain).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Secret,
    /// Seconds before a silent server counts as down.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required), port 587.
    #[default]
    Starttls,
    /// TLS from the first byte, port 465.
    Tls,
    /// No encryption at all (a local relay or a test server), port 25.
    Plain,
}

/// Mail errors, with what the person should check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("email.{field}: \"{value}\" is not an address (expected name@domain)")]
    Address { field: &'static str, value: String },
    #[error("email.to: no recipient (expected at least one address)")]
    NoRecipient,
    #[error("templates/{name}: {reason}")]
    Template { name: String, reason: String },
    #[error("cannot build the mail: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("{path}: cannot read the recording to attach: {source}")]
    Recording {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("smtp {host}: {source}")]
    Smtp {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("{path}: cannot write the mail into the Maildir: {source}")]
    Maildir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Worth retrying as is (a server down or busy), as opposed to a setting to fix.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Smtp { source, .. } => !source.is_permanent(),
            Error::Maildir { .. } | Error::Recording { .. } => true,
            _ => false,
        }
    }
}

/// A built mail and the template problem to report, if the repo's template was not used.
pub struct Composed {
    pub message: Message,
    pub fallback: Option<String>,
}

/// Sends mails by SMTP or into the Maildir. Once it has sent by SMTP it holds lettre's
/// connection pool, which must be dropped inside the tokio runtime.
pub struct Mailer {
    settings: EmailSettings,
    transport: Transport,
    from: Mailbox,
    to: Mailboxes,
    /// Right side of the Message-IDs this mailer makes.
    domain: String,
}

enum Transport {
    Smtp {
        settings: SmtpSettings,
        /// Built on first send: lettre's connection pool needs a running tokio runtime.
        client: tokio::sync::OnceCell<AsyncSmtpTransport<Tokio1Executor>>,
    },
    Maildir(PathBuf),
}

impl Mailer {
    /// Checks the addresses and prepares the transport; no connection is made yet.
    pub fn new(settings: EmailSettings) -> Result<Mailer, Error> {
        let from: Mailbox = settings.from.parse().map_err(|_| Error::Address {
            field: "from",
            value: settings.from.clone(),
        })?;
        let mut to = Mailboxes::new();
        for address in &settings.to {
            let mailbox: Mailbox = address.parse().map_err(|_| Error::Address {
                field: "to",
                value: address.clone(),
            })?;
            to.push(mailbox);
        }
        if to.iter().next().is_none() {
            return Err(Error::NoRecipient);
        }
        let transport = match &settings.smtp {
            Some(smtp) => {
                // Checks the host and TLS parameters now, so a bad setting fails at startup.
                smtp_builder(smtp)?;
                Transport::Smtp {
                    settings: smtp.clone(),
                    client: tokio::sync::OnceCell::new(),
                }
            }
            None => Transport::Maildir(settings.maildir.clone()),
        };
        let domain = from.email.domain().to_owned();
        Ok(Mailer {
            settings,
            transport,
            from,
            to,
            domain,
        })
    }

    pub fn settings(&self) -> &EmailSettings {
        &self.settings
    }

    /// Delivers one mail: accepted by the SMTP server, or durably in `maildir/new/`.
    pub async fn send(&self, message: &Message) -> Result<(), Error> {
        match &self.transport {
            Transport::Smtp { settings, client } => {
                let client = client
                    .get_or_try_init(|| async { smtp_builder(settings).map(|b| b.build()) })
                    .await?;
                client
                    .send(message.clone())
                    .await
                    .map_err(|source| Error::Smtp {
                        host: settings.host.clone(),
                        source,
                    })?;
                Ok(())
            }
            Transport::Maildir(folder) => {
                let folder = folder.clone();
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || write_maildir(&folder, &bytes))
                    .await
                    .map_err(|join| Error::Maildir {
                        path: self.settings.maildir.clone(),
                        source: std::io::Error::other(join.to_string()),
                    })?
            }
        }
    }

    /// The mail for a voicemail: transcript in the body, the recording attached.
    pub fn voicemail(
        &self,
        call: &CallContext<'_>,
        recording: &Path,
        templates: &Templates,
        overrides: &Overrides,
    ) -> Result<Composed, Error> {
        let audio = std::fs::read(recording).map_err(|source| Error::Recording {
            path: recording.to_owned(),
            source,
        })?;
        let rendered = templates.render(
            "voicemail.txt",
            &call.template_values(),
            overrides.get("voicemail.txt").as_deref(),
        )?;
        let (subject, body) = templates::split_subject(&rendered.text);
        let filename = format!(
            "voicemail-{}-{}.wav",
            call.record
                .started
                .with_timezone(&call.timezone)
                .format("%Y-%m-%d-%H%M"),
            slug(call.record),
        );
        let parts = MultiPart::mixed()
            .singlepart(SinglePart::plain(body))
            .singlepart(Attachment::new(filename).body(audio, audio_wav()));
        let message = self
            .headers(call.record, "voicemail", &subject)
            .multipart(parts)?;
        Ok(Composed {
            message,
            fallback: rendered.fallback,
        })
    }

    /// The mail for a missed call without a message.
    pub fn missed(
        &self,
        call: &CallContext<'_>,
        templates: &Templates,
        overrides: &Overrides,
    ) -> Result<Composed, Error> {
        let rendered = templates.render(
            "missed.txt",
            &call.template_values(),
            overrides.get("missed.txt").as_deref(),
        )?;
        let (subject, body) = templates::split_subject(&rendered.text);
        let message = self
            .headers(call.record, "missed", &subject)
            .singlepart(SinglePart::plain(body))?;
        Ok(Composed {
            message,
            fallback: rendered.fallback,
        })
    }

    /// A notice that is not about one call: `outage.txt` (what, since, detail) or
    /// `refused-commit.txt` (commit, summary, errors).
    pub fn notice(
        &self,
        template: &str,
        values: &impl serde::Serialize,
        templates: &Templates,
        overrides: &Overrides,
    ) -> Result<Composed, Error> {
        let rendered = templates.render(template, values, overrides.get(template).as_deref())?;
        let (subject, body) = templates::split_subject(&rendered.text);
        let message = Message::builder()
            .from(self.from.clone())
            .mailbox(lettre::message::header::To::from(self.to.clone()))
            .subject(header_text(&subject))
            .message_id(Some(format!("<{}@{}>", uuid::Uuid::new_v4(), self.domain)))
            .singlepart(SinglePart::plain(body))?;
        Ok(Composed {
            message,
            fallback: rendered.fallback,
        })
    }

    /// From, To, Subject and the threading headers: one Message-ID per call and kind, and a
    /// stable per-caller root in In-Reply-To/References so one caller's mails thread together.
    fn headers(
        &self,
        record: &CallRecord,
        kind: &str,
        subject: &str,
    ) -> lettre::message::MessageBuilder {
        let call_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, record.uuid.as_bytes());
        let caller_id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("tel:{}", record.peer_number).as_bytes(),
        );
        let root = format!("<caller-{}@{}>", caller_id.simple(), self.domain);
        Message::builder()
            .from(self.from.clone())
            .mailbox(lettre::message::header::To::from(self.to.clone()))
            .subject(header_text(subject))
            .message_id(Some(format!(
                "<{kind}-{}@{}>",
                call_id.simple(),
                self.domain
            )))
            .in_reply_to(root.clone())
            .references(root)
    }
}

/// A call record with what the templates need besides it.
pub struct CallContext<'a> {
    pub record: &'a CallRecord,
    pub transcript: Option<&'a Transcript>,
    /// Why there is no transcript, when there is none.
    pub no_transcript: &'a str,
    /// The person's timezone, for the times shown.
    pub timezone: Tz,
}

impl CallContext<'_> {
    /// The values every call template sees (see templates/*.txt).
    pub fn template_values(&self) -> minijinja::Value {
        let record = self.record;
        let local = record.started.with_timezone(&self.timezone);
        let number = record.peer_display();
        let (outcome, voicemail) = match &record.outcome {
            Outcome::Answered {
                by_device,
                talk_secs,
            } => (
                format!(
                    "Answered on {by_device}, talked {}",
                    format_duration(*talk_secs)
                ),
                false,
            ),
            Outcome::Missed => ("Missed, no message".to_owned(), false),
            Outcome::Voicemail { duration_secs, .. } => (
                format!("Voicemail, {}", format_duration(*duration_secs)),
                true,
            ),
            Outcome::Outgoing {
                from_device,
                answered,
                talk_secs,
            } => (
                if *answered {
                    format!(
                        "Outgoing from {from_device}, talked {}",
                        format_duration(*talk_secs)
                    )
                } else {
                    format!("Outgoing from {from_device}, not answered")
                },
                false,
            ),
            Outcome::Declined => ("Declined by a rule".to_owned(), false),
        };
        minijinja::context! {
            caller => header_text(&record.peer_label()),
            number => number,
            contact => record.contact.as_ref().map(|c| header_text(&c.name)),
            caller_id_name => header_text(&record.caller_id_name),
            duration => format_duration(record.duration_secs()),
            time => local.format("%A %-d %B %Y %H:%M %Z").to_string(),
            date => local.format("%Y-%m-%d").to_string(),
            called => record.did.as_deref().map(crate::contacts::number::display),
            rule => record.deciding_rule,
            rules => record.rules_matched,
            devices => record.devices_rung,
            transfers => record.transfers.iter().map(|transfer| {
                let how = match transfer.method {
                    crate::spool::TransferMethod::FeatureCode => "transfer code",
                    crate::spool::TransferMethod::Refer => "phone's transfer key",
                };
                header_text(&format!("{} to {} ({how})", transfer.from, transfer.to))
            }).collect::<Vec<_>>(),
            drops => record.drops.iter().map(|dropped| {
                header_text(&format!(
                    "{} ({})",
                    dropped.device,
                    dropped.cause.to_lowercase().replace('_', " ")
                ))
            }).collect::<Vec<_>>(),
            conference => record.conference.iter().map(|who| header_text(who)).collect::<Vec<_>>(),
            hangup_cause => record.hangup_cause,
            conversation => record.conversation.as_ref().map(|path| path.display().to_string()),
            language => record.language,
            transcript => self.transcript.map(|t| t.text.clone()).filter(|t| !t.is_empty()),
            confidence => self.transcript.and_then(Transcript::mean_confidence)
                .map(|c| (c * 100.0).round() as u32),
            no_transcript => if self.transcript.is_some_and(|t| t.text.is_empty()) {
                "nothing was recognised"
            } else {
                self.no_transcript
            },
            outcome => outcome,
            voicemail => voicemail,
        }
    }
}

fn audio_wav() -> ContentType {
    // A constant, valid media type.
    ContentType::parse("audio/wav").unwrap_or(ContentType::TEXT_PLAIN)
}

/// A header value with every control character (CR, LF, tabs) turned into a space: lettre
/// encodes non-ASCII text, but only this keeps a caller's "\r\nBcc: x@y" inside the Subject.
pub fn header_text(text: &str) -> String {
    let mut flat = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if !(c == ' ' && flat.ends_with(' ')) {
            flat.push(c);
        }
    }
    flat.trim().to_owned()
}

/// "marie-dubois" from the contact or caller name; the number's digits for other scripts.
fn slug(record: &CallRecord) -> String {
    let mut slug = String::new();
    for c in record.peer_name().unwrap_or("").chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        let digits: String = record
            .peer_number
            .chars()
            .filter(char::is_ascii_digit)
            .take(20)
            .collect();
        if digits.is_empty() {
            "unknown".to_owned()
        } else {
            digits
        }
    } else {
        slug.to_owned()
    }
}

fn smtp_builder(
    smtp: &SmtpSettings,
) -> Result<lettre::transport::smtp::AsyncSmtpTransportBuilder, Error> {
    let smtp_error = |source| Error::Smtp {
        host: smtp.host.clone(),
        source,
    };
    let mut builder = match smtp.security {
        SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(smtp_error)?
        }
        SmtpSecurity::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(smtp_error)?
        }
        SmtpSecurity::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    if let Some(port) = smtp.port {
        builder = builder.port(port);
    }
    if let Some(username) = &smtp.username {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            smtp.password.expose().to_owned(),
        ));
    }
    Ok(builder.timeout(Some(Duration::from_secs(smtp.timeout_secs.max(1)))))
}

/// Maildir delivery: written and synced in `tmp/`, then renamed into `new/`, so a reader never
/// sees half a mail and a crash leaves at most a stray file in `tmp/`.
fn write_maildir(folder: &Path, bytes: &[u8]) -> Result<(), Error> {
    let error = |source| Error::Maildir {
        path: folder.to_owned(),
        source,
    };
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(folder.join(sub)).map_err(error)?;
    }
    let name = format!(
        "{}.{}.patchbay",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = folder.join("tmp").join(&name);
    let mut file = std::fs::File::create(&tmp).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&tmp, folder.join("new").join(&name)).map_err(error)?;
    std::fs::File::open(folder.join("new"))
        .and_then(|dir| dir.sync_all())
        .map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::Origin;
    use chrono::TimeZone;

    fn record(name: &str) -> CallRecord {
        let start = chrono::Utc
            .with_ymd_and_hms(2026, 11, 28, 19, 3, 0)
            .unwrap();
        CallRecord {
            uuid: "3f7a6c1e-0000-4000-8000-000000000001".into(),
            origin: Origin::External,
            peer_number: "+15145550199".into(),
            caller_id_name: name.into(),
            contact: None,
            did: Some("+15145550100".into()),
            language: Some("fr".into()),
            started: start,
            answered: Some(start),
            ended: start + chrono::Duration::seconds(42),
            outcome: Outcome::Voicemail {
                recording: "recording.wav".into(),
                duration_secs: 42,
            },
            devices_rung: vec!["desk".into()],
            rules_matched: vec!["default".into()],
            deciding_rule: Some("default".into()),
            hangup_cause: Some("NORMAL_CLEARING".into()),
            transfers: Vec::new(),
            drops: Vec::new(),
            conference: Vec::new(),
            conversation: None,
        }
    }

    #[test]
    fn header_text_is_one_line() {
        assert_eq!(header_text("Evil\r\nBcc: x@y\t!"), "Evil Bcc: x@y !");
    }

    #[test]
    fn attachment_names_are_readable_ascii() {
        assert_eq!(slug(&record("Marie  Dubois")), "marie-dubois");
        assert_eq!(slug(&record("김민수")), "15145550199");
        assert_eq!(slug(&record("../../etc\r\n")), "etc");
    }

    #[test]
    fn voicemail_mail_threads_per_caller_and_keeps_injection_out_of_headers() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("r.wav");
        std::fs::write(&wav, b"RIFF....WAVE").unwrap();
        let mailer = Mailer::new(EmailSettings {
            from: "patchbay <pb@example.org>".into(),
            to: vec!["me@example.org".into()],
            ..EmailSettings::default()
        })
        .unwrap();
        let templates = Templates::new();
        let overrides = Overrides::default();
        let first = record("Evil\r\nBcc: x@y");
        let mut second = record("Evil\r\nBcc: x@y");
        second.uuid = "another".into();
        let text = |r: &CallRecord| {
            let call = CallContext {
                record: r,
                transcript: None,
                no_transcript: "no model",
                timezone: chrono_tz::America::Montreal,
            };
            let mail = mailer
                .voicemail(&call, &wav, &templates, &overrides)
                .unwrap();
            String::from_utf8(mail.message.formatted()).unwrap()
        };
        let (a, b) = (text(&first), text(&second));
        let header = |mail: &str, name: &str| -> Vec<String> {
            let head = mail.split("\r\n\r\n").next().unwrap();
            head.split("\r\n")
                .filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                .map(|l| l[name.len() + 1..].trim().to_owned())
                .collect()
        };
        assert!(header(&a, "bcc").is_empty(), "{a}");
        assert_eq!(
            header(&a, "subject"),
            vec!["Voicemail from Evil Bcc: x@y (0:42)"]
        );
        assert_ne!(header(&a, "message-id"), header(&b, "message-id"));
        assert_eq!(header(&a, "references"), header(&b, "references"));
        assert_eq!(header(&a, "in-reply-to"), header(&a, "references"));
        assert!(
            a.contains("voicemail-2026-11-28-1403-evil-bcc-x-y.wav"),
            "{a}"
        );
        assert!(a.contains("No transcript available: no model."), "{a}");
    }

    #[tokio::test]
    async fn refused_commit_notice_lands_in_the_maildir_with_the_error_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::new(EmailSettings {
            maildir: dir.path().to_owned(),
            ..EmailSettings::default()
        })
        .unwrap();
        let values = minijinja::context! {
            commit => "3f2a1c9", summary => "night rules",
            errors => vec!["rules/20-night.rhai:12: unknown key 'rule_anyy' (commit 3f2a1c9)"],
        };
        let composed = mailer
            .notice(
                "refused-commit.txt",
                &values,
                &Templates::new(),
                &Overrides::default(),
            )
            .unwrap();
        mailer.send(&composed.message).await.unwrap();
        let new = dir.path().join("new");
        let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(
            text.contains("Subject: Your phone repo change was not applied (commit 3f2a1c9)"),
            "{text}"
        );
        assert!(
            text.contains("rules/20-night.rhai:12: unknown key"),
            "{text}"
        );
        assert!(text.contains("To: me@localhost"), "{text}");
    }

    #[test]
    fn bad_addresses_are_named() {
        let error = Mailer::new(EmailSettings {
            to: vec!["bob@".into()],
            ..EmailSettings::default()
        })
        .err()
        .unwrap();
        assert_eq!(
            error.to_string(),
            "email.to: \"bob@\" is not an address (expected name@domain)"
        );
    }

    #[test]
    fn maildir_delivery_lands_in_new() {
        let dir = tempfile::tempdir().unwrap();
        write_maildir(dir.path(), b"Subject: x\r\n\r\nbody").unwrap();
        let new: Vec<_> = std::fs::read_dir(dir.path().join("new")).unwrap().collect();
        assert_eq!(new.len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
