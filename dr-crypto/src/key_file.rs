//! The text files keys and identities live in: comment lines, then one key line whose
//! prefix says what it holds (`DR-KEY-V1-…`, `DR-X25519-SECRET-V1-…`, `AGE-SECRET-KEY-1…`).
//! See FORMAT.md. The kinds themselves parse their line ([`crate::MasterKey`],
//! [`crate::X25519Identity`], [`crate::AgeIdentity`]).

use std::io::Write;
use std::path::Path;

use dr_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// The prefix of the key line in a key file.
pub const KEY_FILE_PREFIX: &str = "DR-KEY-V1-";
/// The prefix of the secret line in an identity file.
pub const IDENTITY_PREFIX: &str = "DR-X25519-SECRET-V1-";

/// The parts of a key or identity file that every kind shares: one non-comment line, and
/// the key id recorded in a `# dr … key id <16 hex digits>` comment, if any.
pub(crate) struct KeyText<'a> {
    pub(crate) line: &'a str,
    recorded_id: Option<String>,
}

impl<'a> KeyText<'a> {
    /// Lines are split on `\n` (a trailing `\r` is ignored) and trimmed; blank lines and
    /// `#` comments are skipped; exactly one other line must remain.
    pub(crate) fn parse(text: &'a str) -> Result<KeyText<'a>> {
        let mut line = None;
        let mut recorded_id = None;
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            if let Some(comment) = l.strip_prefix('#') {
                let comment = comment.trim_start();
                let rest = comment
                    .strip_prefix("dr master key id ")
                    .or_else(|| comment.strip_prefix("dr identity key id "))
                    .or_else(|| comment.strip_prefix("dr signing key id "));
                if let Some(rest) = rest {
                    let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
                    if id.len() == 16 {
                        recorded_id = Some(id.to_ascii_lowercase());
                    }
                }
                continue;
            }
            if line.is_some() {
                return Err(Error::invalid(
                    "not a dr key file: it has more than one non-comment line",
                ));
            }
            line = Some(l);
        }
        let line = line.ok_or_else(|| {
            Error::invalid(format!(
                "not a dr key file: no line starting with {KEY_FILE_PREFIX} or {IDENTITY_PREFIX}"
            ))
        })?;
        Ok(KeyText { line, recorded_id })
    }

    /// Fail if a key id was recorded in a comment and differs from `id`.
    pub(crate) fn check_id(&self, id: &str) -> Result<()> {
        match &self.recorded_id {
            Some(recorded) if recorded != id => Err(Error::invalid(format!(
                "the key file is damaged: its key line does not match the key id {recorded} \
                 recorded in its comment"
            ))),
            _ => Ok(()),
        }
    }
}

/// Write `text` (a key or identity file) to a new file at `path`, mode 0600; never overwrites.
pub(crate) fn write_secret_file(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::new(
                ErrorKind::AlreadyExists,
                "refusing to overwrite an existing key file: move it away first if it is no \
                 longer needed",
            )
            .with_source(e)
        } else {
            Error::io("creating the key file", e)
        }
        .with_context("path", path.display())
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing the key file", e).with_context("path", path.display()))
}

/// Read a small secret text file and parse it with `parse`; errors name the path. A file
/// that group or others may read is refused (as ssh refuses such a private key): a secret
/// that other users can read is no longer secret, and the fix is one command.
pub(crate) fn read_secret_file<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    check_private(path)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        let kind = e.kind();
        let error = if kind == std::io::ErrorKind::NotFound {
            Error::new(ErrorKind::NotFound, "key file not found").with_source(e)
        } else {
            Error::io("reading the key file", e)
        };
        error.with_context("path", path.display())
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Error::invalid("not a dr key file: it is not UTF-8 text")
            .with_context("path", path.display())
    })?;
    parse(text).map_err(|e| e.with_context("path", path.display()))
}

/// Fail if the file at `path` is readable or writable by group or others (Unix only).
fn check_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::invalid(format!(
                    "key file {} is accessible by group or others (mode {mode:03o}); a secret \
                     others can read is no longer secret: run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = crate::MasterKey::generate().unwrap();
        crate::write_key_file(&path, &key).unwrap();
        crate::read_key_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = crate::read_key_file(&path).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{e}"
        );
        assert!(e.to_string().contains("mode 640"), "{e}");
    }
}
