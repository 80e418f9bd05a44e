//! The error type shared by every dr crate.
//!
//! Deviation from DESIGN.md ("one error type per crate"): the plug-in traits cross crate
//! boundaries (a `Dumper` from dr-db feeds a pipeline in dr-core that writes through a
//! `StorageTarget` from dr-storage), so every crate reports through this one type, the way
//! OpenDAL does. What a caller matches on is the [`ErrorKind`]; what a user reads is the
//! message plus its context (which backup, which object, which table); the lower-level cause
//! stays in [`std::error::Error::source`]. Messages never contain secrets: constructors take
//! only what the caller chose to say.

use std::borrow::Cow;
use std::fmt;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that branch on it (exit codes, retries, tests).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An object, backup or key that was asked for does not exist.
    NotFound,
    /// Something that must be created fresh already exists (key file, repository, database).
    AlreadyExists,
    /// Stored bytes fail a checksum, an authentication tag, or a format check.
    Corrupt,
    /// The key material given cannot open this data (wrong key file, passphrase, revoked key).
    WrongKey,
    /// A configuration value, URL or argument is malformed.
    InvalidInput,
    /// A restore target holds data and replacing it was not asked for.
    NotEmpty,
    /// The backend or format cannot do this.
    Unsupported,
    /// The storage backend failed (network, permissions, service errors).
    Storage,
    /// The database server or its client programs failed.
    Database,
    /// Local I/O failed.
    Io,
    /// A required program or server binary is missing from this machine.
    MissingPrerequisite,
    /// Another process holds the lease this operation needs.
    Locked,
    /// The object is in an archive storage class (Glacier, Archive tier) and must be
    /// restored (thawed) in the store before it can be read.
    Archived,
    /// A stage of a pipeline stopped (its consumer went away or it was cancelled).
    Cancelled,
    /// Anything else: a bug in dr if you see it.
    Other,
}

impl ErrorKind {
    /// A short lowercase name, stable for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::WrongKey => "wrong_key",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotEmpty => "not_empty",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Storage => "storage",
            ErrorKind::Database => "database",
            ErrorKind::Io => "io",
            ErrorKind::MissingPrerequisite => "missing_prerequisite",
            ErrorKind::Locked => "locked",
            ErrorKind::Archived => "archived",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Other => "other",
        }
    }

    /// The kind whose [`as_str`](Self::as_str) is `name`: records and the WAL spool store
    /// kinds by name. A name this version does not know is `Other`.
    pub fn from_name(name: &str) -> ErrorKind {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .unwrap_or(ErrorKind::Other)
    }

    /// Every kind, for name lookups (a new kind goes here as well as in `as_str`).
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Corrupt,
        ErrorKind::WrongKey,
        ErrorKind::InvalidInput,
        ErrorKind::NotEmpty,
        ErrorKind::Unsupported,
        ErrorKind::Storage,
        ErrorKind::Database,
        ErrorKind::Io,
        ErrorKind::MissingPrerequisite,
        ErrorKind::Locked,
        ErrorKind::Archived,
        ErrorKind::Cancelled,
        ErrorKind::Other,
    ];
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from any dr crate: a kind, a message for this layer, context, and a cause.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    context: Vec<(&'static str, String)>,
    temporary: bool,
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind` whose `message` describes what this layer was doing.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            temporary: false,
            source: None,
        }
    }

    /// Attach the lower-level cause (kept in `source()`, not repeated in `Display`).
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Attach a piece of context such as `("backup", id)` or `("object", path)`.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        if !self.context.iter().any(|(k, _)| *k == key) {
            self.context.push((key, value.to_string()));
        }
        self
    }

    /// Mark the error as temporary: the same call may succeed if retried.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation may succeed (timeouts, throttling, 5xx).
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// This layer's message without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context pairs attached so far, outermost last.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The whole chain on one line: this error, then each cause, joined by ": ".
    /// This is what a command-line tool prints. Credentials in URLs that a cause quotes
    /// (`http://user:secret@host`) are replaced by `***`.
    pub fn report(&self) -> String {
        crate::redact::redact_url_credentials(&self.report_raw())
    }

    fn report_raw(&self) -> String {
        let mut line = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        line
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::Corrupt`] error.
    pub fn corrupt(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// Shorthand for an [`ErrorKind::Io`] error with its cause.
    pub fn io(message: impl Into<Cow<'static, str>>, source: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, message).with_source(source)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k} {v}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if !self.context.is_empty() {
            d.field("context", &self.context);
        }
        if self.temporary {
            d.field("temporary", &true);
        }
        if let Some(s) = &self.source {
            d.field(
                "source",
                &crate::redact::Verbatim(crate::redact::redact_url_credentials(&format!("{s:?}"))),
            );
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Add context to the error of a `Result` without spelling out `map_err`.
pub trait ResultExt<T> {
    /// Attach `(key, value)` context to the error, if any.
    fn context(self, key: &'static str, value: impl fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, key: &'static str, value: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.with_context(key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        use ErrorKind::*;
        let names: std::collections::BTreeSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len(), "every name differs");
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.as_str()), kind);
        }
        assert_eq!(ErrorKind::from_name("from_a_newer_version"), Other);
    }

    #[test]
    fn display_shows_context_and_report_shows_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::io("writing the manifest", io)
            .with_context("backup", "20261125T020000Z-pg-7f3a");
        assert_eq!(
            e.to_string(),
            "writing the manifest (backup 20261125T020000Z-pg-7f3a)"
        );
        assert_eq!(
            e.report(),
            "writing the manifest (backup 20261125T020000Z-pg-7f3a): disk on fire"
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(!e.is_temporary());
    }
}
