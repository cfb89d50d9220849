//! Where outgoing mail goes: an SMTP server (`REFERDESK_SMTP_URL`) or, without one, `.eml`
//! files under `{data_dir}/mail/` that a developer can open in any mail program.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lettre::{Message, SmtpTransport, Transport as _};

use crate::private_files;

/// How long one SMTP conversation may take before it counts as a failed attempt.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub enum Transport {
    Smtp(SmtpTransport),
    Files(PathBuf),
}

/// Why a message was not delivered.
#[derive(Debug)]
pub struct SendError {
    pub message: String,
    /// The server refused for good (5xx): retrying cannot help.
    pub permanent: bool,
}

impl SendError {
    pub fn temporary(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            permanent: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl Transport {
    /// SMTP when a URL is configured (`smtp://`, `smtp://…?tls=required`, `smtps://`),
    /// else the mail folder, created now so that a bad data dir fails at start.
    pub fn from_config(smtp_url: Option<&str>, data_dir: &std::path::Path) -> anyhow::Result<Transport> {
        match smtp_url {
            Some(url) => {
                // The URL may hold a password: never echo it in the error.
                let builder = SmtpTransport::from_url(url).map_err(|error| {
                    anyhow::anyhow!("REFERDESK_SMTP_URL is not a usable SMTP URL: {error}")
                })?;
                Ok(Transport::Smtp(builder.timeout(Some(SMTP_TIMEOUT)).build()))
            }
            None => {
                // Messages hold personal data: the folder and each file are the owner's only.
                let folder = data_dir.join("mail");
                private_files::private_dir(&folder, private_files::DIR_MODE)
                    .with_context(|| format!("could not create the mail folder {}", folder.display()))?;
                for entry in std::fs::read_dir(&folder)? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|extension| extension == "eml") {
                        private_files::set_mode(&path, private_files::FILE_MODE)?;
                    }
                }
                Ok(Transport::Files(folder))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(_) => "SMTP".to_string(),
            Transport::Files(folder) => format!("files in {}", folder.display()),
        }
    }

    pub fn send(&self, outbox_id: i64, message: &Message) -> Result<(), SendError> {
        match self {
            Transport::Smtp(smtp) => smtp.send(message).map(|_| ()).map_err(|error| SendError {
                message: format!("SMTP: {error}"),
                permanent: error.is_permanent(),
            }),
            Transport::Files(folder) => write_eml(folder, outbox_id, message)
                .map_err(|error| SendError::temporary(format!("could not write the .eml file: {error}"))),
        }
    }
}

/// Writes `{outbox_id}-{timestamp}.eml` (mode 0600), complete or not at all, so a reader
/// never sees half a message.
fn write_eml(folder: &std::path::Path, outbox_id: i64, message: &Message) -> std::io::Result<()> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let name = format!("{outbox_id}-{stamp}.eml");
    private_files::write_private_file(&folder.join(name), &message.formatted())
}
