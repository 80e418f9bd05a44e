//! What opens a stream ([`Identity`]) and what a data key can be wrapped for ([`Recipient`]),
//! whatever their kind, and the files identities live in.

use std::fmt;
use std::path::Path;

use dr_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

use crate::age::{AgeIdentity, AgeRecipient, AGE_IDENTITY_PREFIX, AGE_RECIPIENT_PREFIX};
use crate::key_file::{
    read_secret_file, write_secret_file, KeyText, IDENTITY_PREFIX, KEY_FILE_PREFIX,
};
use crate::keys::MasterKey;
use crate::x25519::{X25519Identity, X25519Recipient, RECIPIENT_PREFIX};

/// A secret that can open streams: a symmetric master key (key file or passphrase), an
/// X25519 identity (for `dr-aead-v1` repositories with public recipients), or an age X25519
/// identity (for age-format repositories).
///
/// `Debug` shows the kind and key id only; the secret is wiped on drop.
#[derive(Clone)]
pub enum Identity {
    /// A 256-bit symmetric key: it both wraps and unwraps.
    Symmetric(MasterKey),
    /// The secret half of a dr X25519 key pair.
    X25519(X25519Identity),
    /// An age identity (`AGE-SECRET-KEY-1…`), for age-format repositories.
    Age(AgeIdentity),
}

impl Identity {
    /// The public key id that wrapped keys and the repository's key list name it by.
    pub fn key_id(&self) -> String {
        match self {
            Identity::Symmetric(k) => k.key_id(),
            Identity::X25519(k) => k.key_id(),
            Identity::Age(k) => k.key_id(),
        }
    }

    /// `key-file`, `x25519` or `age`: the kind a repository records for it.
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::Symmetric(_) => "key-file",
            Identity::X25519(_) => "x25519",
            Identity::Age(_) => "age",
        }
    }

    /// The recipient that data keys are wrapped for so that this identity opens them.
    pub fn to_recipient(&self) -> Recipient {
        match self {
            Identity::Symmetric(k) => Recipient::Symmetric(k.clone()),
            Identity::X25519(k) => Recipient::X25519(k.recipient().clone()),
            Identity::Age(k) => Recipient::Age(k.recipient()),
        }
    }

    /// Parse the text of a key file or identity file, recognised by its non-comment line:
    /// `DR-KEY-V1-…` (symmetric), `DR-X25519-SECRET-V1-…` (dr X25519 identity) or
    /// `AGE-SECRET-KEY-1…` (age identity, as written by `age-keygen`). See FORMAT.md.
    /// Errors are [`ErrorKind::InvalidInput`] and never repeat the secret.
    pub fn from_text(text: &str) -> Result<Identity> {
        let parsed = KeyText::parse(text)?;
        let line = parsed.line;
        let identity = if line.starts_with(KEY_FILE_PREFIX) {
            Identity::Symmetric(MasterKey::from_key_file(text)?)
        } else if let Some(encoded) = line.strip_prefix(IDENTITY_PREFIX) {
            Identity::X25519(X25519Identity::from_encoded_secret(encoded)?)
        } else if line.starts_with(AGE_IDENTITY_PREFIX) {
            Identity::Age(AgeIdentity::parse(line)?)
        } else {
            return Err(Error::invalid(format!(
                "not a dr key file: its key line starts with none of {KEY_FILE_PREFIX}, \
                 {IDENTITY_PREFIX} or {AGE_IDENTITY_PREFIX}"
            )));
        };
        parsed.check_id(&identity.key_id())?;
        Ok(identity)
    }

    /// The identity as file text (the format [`Identity::from_text`] reads).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(match self {
            Identity::Symmetric(k) => k.to_key_file(),
            Identity::X25519(k) => k.to_identity_file(),
            Identity::Age(k) => k.to_identity_file(),
        })
    }
}

impl From<MasterKey> for Identity {
    fn from(k: MasterKey) -> Identity {
        Identity::Symmetric(k)
    }
}

impl From<X25519Identity> for Identity {
    fn from(k: X25519Identity) -> Identity {
        Identity::X25519(k)
    }
}

impl From<AgeIdentity> for Identity {
    fn from(k: AgeIdentity) -> Identity {
        Identity::Age(k)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("kind", &self.kind())
            .field("id", &self.key_id())
            .finish()
    }
}

/// Something a stream's data key can be wrapped for.
///
/// Public kinds ([`Recipient::X25519`], [`Recipient::Age`]) carry no secret, so a backup host
/// can hold them and still be unable to read what it wrote.
#[derive(Clone)]
pub enum Recipient {
    /// A symmetric master key (the holder can also unwrap).
    Symmetric(MasterKey),
    /// A dr X25519 public recipient (`dr-x25519-v1-…`).
    X25519(X25519Recipient),
    /// An age X25519 recipient (`age1…`), for age-format repositories.
    Age(AgeRecipient),
}

impl Recipient {
    /// The key id of the identity that will open what is wrapped for this recipient.
    pub fn key_id(&self) -> String {
        match self {
            Recipient::Symmetric(k) => k.key_id(),
            Recipient::X25519(r) => r.key_id(),
            Recipient::Age(r) => r.key_id(),
        }
    }

    /// `key-file`, `x25519` or `age`.
    pub fn kind(&self) -> &'static str {
        match self {
            Recipient::Symmetric(_) => "key-file",
            Recipient::X25519(_) => "x25519",
            Recipient::Age(_) => "age",
        }
    }

    /// The public text form, for public kinds (`None` for a symmetric key).
    pub fn public_text(&self) -> Option<String> {
        match self {
            Recipient::Symmetric(_) => None,
            Recipient::X25519(r) => Some(r.to_string()),
            Recipient::Age(r) => Some(r.to_string()),
        }
    }

    /// Parse a public recipient: `dr-x25519-v1-…` or `age1…`.
    pub fn parse(text: &str) -> Result<Recipient> {
        let text = text.trim();
        if text.starts_with(RECIPIENT_PREFIX) {
            Ok(Recipient::X25519(X25519Recipient::parse(text)?))
        } else if text.starts_with(AGE_RECIPIENT_PREFIX) {
            Ok(Recipient::Age(AgeRecipient::parse(text)?))
        } else {
            Err(Error::invalid(format!(
                "not a public recipient: expected {RECIPIENT_PREFIX}… (from `drctl keygen`) or \
                 {AGE_RECIPIENT_PREFIX}… (from `age-keygen`)"
            )))
        }
    }
}

/// Two recipients are equal when they are of the same kind and have the same key id.
impl PartialEq for Recipient {
    fn eq(&self, other: &Recipient) -> bool {
        self.kind() == other.kind() && self.key_id() == other.key_id()
    }
}

impl Eq for Recipient {}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipient")
            .field("kind", &self.kind())
            .field("id", &self.key_id())
            .finish()
    }
}

/// Read a key file or identity file of any kind (see [`Identity::from_text`]).
///
/// Fails with [`ErrorKind::NotFound`] if there is no file at `path`, and with
/// [`ErrorKind::InvalidInput`] if its contents are not a valid key; both name the path.
pub fn read_identity_file(path: &Path) -> Result<Identity> {
    read_secret_file(path, Identity::from_text)
}

/// Write `identity` to a new file at `path`, mode 0600. Never overwrites
/// ([`ErrorKind::AlreadyExists`]).
pub fn write_identity_file(path: &Path, identity: &Identity) -> Result<()> {
    write_secret_file(path, &identity.to_file_text())
}

/// The error for a recipient kind that a backend cannot wrap for.
pub(crate) fn unsupported_recipient(r: &Recipient, backend: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "recipient {} is of kind {}, which {backend} cannot encrypt to",
            r.key_id(),
            r.kind()
        ),
    )
}
