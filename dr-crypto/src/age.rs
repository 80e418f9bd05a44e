//! The age backend: streams written as standard age files (<https://age-encryption.org/v1>)
//! to X25519 recipients (`age1…`), so that the stock `age` CLI decrypts a stored object:
//! `age -d -i key.txt OBJECT | zstd -d | pg_restore …`.
//!
//! Built on the `age` crate (the library behind rage; RustCrypto primitives). In an age file
//! the wrapped file keys (the recipient stanzas) are part of the stored object's header, not
//! of the manifest: see FORMAT.md for what that means for rotation and revocation.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use dr_core::{
    Decryptor, EncryptionInfo, Encryptor, Error, ErrorKind, PieceSealer, Result, Transform,
    WrappedKey,
};
use ring::digest;
use zeroize::Zeroizing;

/// The scheme name recorded in [`EncryptionInfo::scheme`] for age files.
pub const AGE_SCHEME: &str = "age";
/// The method recorded in the manifest's informational [`WrappedKey`] entries of an age
/// stream: the real stanza is in the object's header; `body` holds the `age1…` recipient.
pub const AGE_STANZA_METHOD: &str = "age-header-x25519";
/// The prefix of an age X25519 identity (`age-keygen` output).
pub const AGE_IDENTITY_PREFIX: &str = "AGE-SECRET-KEY-1";
/// The prefix of an age X25519 recipient.
pub const AGE_RECIPIENT_PREFIX: &str = "age1";

const KEY_ID_LABEL: &[u8] = b"dr age key id v1";
const READ_BYTES: usize = 64 * 1024;

fn age_key_id(recipient_text: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(KEY_ID_LABEL);
    ctx.update(recipient_text.as_bytes());
    hex::encode(&ctx.finish().as_ref()[..8])
}

/// An age X25519 recipient (`age1…`).
#[derive(Clone)]
pub struct AgeRecipient {
    inner: age::x25519::Recipient,
    text: String,
    id: String,
}

impl AgeRecipient {
    /// Parse `age1…`. Errors are [`ErrorKind::InvalidInput`].
    pub fn parse(text: &str) -> Result<AgeRecipient> {
        let text = text.trim();
        let inner = age::x25519::Recipient::from_str(text).map_err(|_| {
            Error::invalid("not a valid age X25519 recipient (expected age1… from age-keygen)")
        })?;
        let text = inner.to_string();
        Ok(AgeRecipient {
            id: age_key_id(&text),
            inner,
            text,
        })
    }

    /// The key id: the first 8 bytes of SHA-256("dr age key id v1" || `age1…` text), in hex.
    pub fn key_id(&self) -> String {
        self.id.clone()
    }
}

impl PartialEq for AgeRecipient {
    fn eq(&self, other: &AgeRecipient) -> bool {
        self.text == other.text
    }
}

impl Eq for AgeRecipient {}

impl fmt::Display for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeRecipient")
            .field("id", &self.id)
            .field("recipient", &self.text)
            .finish()
    }
}

/// An age X25519 identity (`AGE-SECRET-KEY-1…`). `Debug` shows the key id only; the age
/// crate keeps the scalar in a zeroizing secret type.
#[derive(Clone)]
pub struct AgeIdentity {
    inner: age::x25519::Identity,
    id: String,
}

impl AgeIdentity {
    /// A new random identity.
    pub fn generate() -> AgeIdentity {
        AgeIdentity::from_inner(age::x25519::Identity::generate())
    }

    fn from_inner(inner: age::x25519::Identity) -> AgeIdentity {
        let id = age_key_id(&inner.to_public().to_string());
        AgeIdentity { inner, id }
    }

    /// Parse one `AGE-SECRET-KEY-1…` line. Errors never repeat the secret.
    pub fn parse(line: &str) -> Result<AgeIdentity> {
        let inner = age::x25519::Identity::from_str(line.trim()).map_err(|_| {
            Error::invalid(
                "the age identity line of the key file is damaged or not an X25519 identity",
            )
        })?;
        Ok(AgeIdentity::from_inner(inner))
    }

    /// The key id of its recipient.
    pub fn key_id(&self) -> String {
        self.id.clone()
    }

    /// The public recipient (`age1…`).
    pub fn recipient(&self) -> AgeRecipient {
        let inner = self.inner.to_public();
        let text = inner.to_string();
        AgeRecipient {
            id: age_key_id(&text),
            inner,
            text,
        }
    }

    /// The identity file text, readable by `age -d -i` and by dr.
    pub fn to_identity_file(&self) -> String {
        use age::secrecy::ExposeSecret;
        let secret = self.inner.to_string();
        format!(
            "# dr identity key id {}: anyone holding this file can read the backups it protects\n\
             # public key: {}\n\
             {}\n",
            self.id,
            self.recipient(),
            secret.expose_secret()
        )
    }
}

impl fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeIdentity").field("id", &self.id).finish()
    }
}

/// Encrypts streams as standard age files to one or more `age1…` recipients.
#[derive(Clone)]
pub struct AgeEncryptor {
    recipients: Vec<AgeRecipient>,
}

impl AgeEncryptor {
    /// An encryptor to `recipients` (at least one; duplicates are dropped).
    pub fn new(recipients: Vec<AgeRecipient>) -> Result<AgeEncryptor> {
        let mut unique: Vec<AgeRecipient> = Vec::new();
        for r in recipients {
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        if unique.is_empty() {
            return Err(Error::invalid(
                "an age encryptor needs at least one age1… recipient",
            ));
        }
        Ok(AgeEncryptor { recipients: unique })
    }

    /// The ids of the recipients.
    pub fn key_ids(&self) -> Vec<String> {
        self.recipients.iter().map(AgeRecipient::key_id).collect()
    }
}

impl fmt::Debug for AgeEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeEncryptor")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

/// A `Write` that appends to a buffer shared with the transform that drains it.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn drain_into(&self, out: &mut Vec<u8>) {
        let mut b = self.0.lock().expect("buffer lock");
        out.append(&mut b);
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct AgeSealer {
    writer: Option<age::stream::StreamWriter<SharedBuf>>,
    buf: SharedBuf,
}

fn age_failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Other, format!("age {what} failed")).with_source(e)
}

impl Transform for AgeSealer {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Other, "update after finish"))?;
        w.write_all(input)
            .map_err(|e| age_failed("encryption", e))?;
        self.buf.drain_into(out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let w = self
            .writer
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Other, "finish called twice"))?;
        w.finish().map_err(|e| age_failed("encryption", e))?;
        self.buf.drain_into(out);
        Ok(())
    }
}

impl Encryptor for AgeEncryptor {
    fn encrypt_stream(&self) -> Result<(EncryptionInfo, Box<dyn Transform>)> {
        let encryptor = age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|r| &r.inner as &dyn age::Recipient),
        )
        .map_err(|e| age_failed("header", e))?;
        let buf = SharedBuf::default();
        let writer = encryptor
            .wrap_output(buf.clone())
            .map_err(|e| age_failed("header", e))?;
        let info = EncryptionInfo {
            scheme: AGE_SCHEME.to_owned(),
            cipher: "chacha20-poly1305".to_owned(),
            wrapped_keys: self
                .recipients
                .iter()
                .map(|r| WrappedKey {
                    key_id: r.key_id(),
                    method: AGE_STANZA_METHOD.to_owned(),
                    body: r.text.clone(),
                })
                .collect(),
        };
        Ok((
            info,
            Box::new(AgeSealer {
                writer: Some(writer),
                buf,
            }),
        ))
    }

    /// Every piece is an age file of its own (with its own file key) for the same
    /// recipients; age has no way to bind a file to a name, so in an age-format repository
    /// the pieces are held together by the manifest's SHA-256s (signed in a signed
    /// repository).
    fn encrypt_pieces(&self) -> Result<(EncryptionInfo, Box<dyn PieceSealer>)> {
        let (info, _) = self.encrypt_stream()?;
        Ok((info, Box::new(self.clone())))
    }
}

impl PieceSealer for AgeEncryptor {
    fn seal(&self, _name: &str) -> Result<Box<dyn Transform>> {
        Ok(self.encrypt_stream()?.1)
    }
}

/// Opens age files with the X25519 identities it holds.
pub struct AgeDecryptor {
    identities: Vec<AgeIdentity>,
}

impl AgeDecryptor {
    /// A decryptor trying `identities`.
    pub fn new(identities: Vec<AgeIdentity>) -> AgeDecryptor {
        AgeDecryptor { identities }
    }

    /// The ids of the identities held.
    pub fn key_ids(&self) -> Vec<String> {
        self.identities.iter().map(AgeIdentity::key_id).collect()
    }
}

impl fmt::Debug for AgeDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeDecryptor")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl Decryptor for AgeDecryptor {
    fn decrypt_stream(&self, info: &EncryptionInfo) -> Result<Box<dyn Transform>> {
        if info.scheme != AGE_SCHEME {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "encryption scheme {:?} is not supported by the age decryptor",
                    info.scheme
                ),
            ));
        }
        let held = self.key_ids();
        if !info.key_ids().iter().any(|id| held.iter().any(|h| h == id)) {
            return Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "none of the keys given can open this stream: it opens with key id {}; keys \
                     given: {}",
                    info.key_ids().join(", "),
                    if held.is_empty() {
                        "none".to_owned()
                    } else {
                        held.join(", ")
                    }
                ),
            ));
        }
        Ok(Box::new(AgeOpener::start(self.identities.clone())))
    }

    fn decrypt_piece(&self, info: &EncryptionInfo, _name: &str) -> Result<Box<dyn Transform>> {
        self.decrypt_stream(info)
    }
}

/// A `Read` over byte vectors arriving on a channel; EOF when the sender is dropped.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.current = next;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The age crate reads from a `Read`; a [`Transform`] is pushed to. The opener runs the age
/// reader on a thread of its own: `update` hands input over a bounded channel (so memory
/// stays bounded) and collects whatever authenticated plaintext is ready; `finish` closes the
/// input and waits for the rest. The output channel is unbounded but can never run ahead of
/// the bounded input by more than one chunk per input piece.
struct AgeOpener {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    rx: mpsc::Receiver<Result<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<()>>,
    failed: bool,
}

impl AgeOpener {
    fn start(identities: Vec<AgeIdentity>) -> AgeOpener {
        let (tx, input) = mpsc::sync_channel::<Vec<u8>>(4);
        let (output, rx) = mpsc::channel::<Result<Vec<u8>>>();
        let worker = std::thread::spawn(move || {
            let reader = ChannelReader {
                rx: input,
                current: Vec::new(),
                pos: 0,
            };
            if let Err(e) = run_age_reader(reader, &identities, &output) {
                let _ = output.send(Err(e));
            }
        });
        AgeOpener {
            tx: Some(tx),
            rx,
            worker: Some(worker),
            failed: false,
        }
    }

    /// Move ready output into `out`; with `wait`, until the worker is done.
    fn collect(&mut self, out: &mut Vec<u8>, wait: bool) -> Result<()> {
        loop {
            let next = if wait {
                match self.rx.recv() {
                    Ok(v) => v,
                    Err(_) => return Ok(()),
                }
            } else {
                match self.rx.try_recv() {
                    Ok(v) => v,
                    Err(_) => return Ok(()),
                }
            };
            match next {
                Ok(mut plain) => {
                    out.append(&mut plain);
                    plain.zeroize_vec();
                }
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }
}

trait ZeroizeVec {
    fn zeroize_vec(&mut self);
}

impl ZeroizeVec for Vec<u8> {
    fn zeroize_vec(&mut self) {
        zeroize::Zeroize::zeroize(self);
    }
}

fn run_age_reader(
    reader: ChannelReader,
    identities: &[AgeIdentity],
    output: &mpsc::Sender<Result<Vec<u8>>>,
) -> Result<()> {
    let decryptor = age::Decryptor::new(reader).map_err(map_decrypt_error)?;
    let mut stream = decryptor
        .decrypt(identities.iter().map(|i| &i.inner as &dyn age::Identity))
        .map_err(map_decrypt_error)?;
    loop {
        let mut buf = Zeroizing::new(vec![0u8; READ_BYTES]);
        let n = stream.read(&mut buf[..]).map_err(|e| {
            Error::corrupt(
                "the age payload failed authentication or is truncated: the stored data was \
                 modified, truncated, or belongs to another backup",
            )
            .with_source(e)
        })?;
        if n == 0 {
            return Ok(());
        }
        if output.send(Ok(buf[..n].to_vec())).is_err() {
            return Ok(());
        }
    }
}

fn map_decrypt_error(e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::new(
            ErrorKind::WrongKey,
            "none of the age identities given matches a recipient in the file's header",
        ),
        age::DecryptError::InvalidMac | age::DecryptError::DecryptionFailed => {
            Error::corrupt("the age header failed authentication: the stored object was modified")
                .with_source(e)
        }
        other => Error::corrupt("the stored object is not a valid age file").with_source(other),
    }
}

impl Transform for AgeOpener {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(Error::new(ErrorKind::Other, "update after an error"));
        }
        if !input.is_empty() {
            let tx = self
                .tx
                .as_ref()
                .ok_or_else(|| Error::new(ErrorKind::Other, "update after finish"))?;
            if tx.send(input.to_vec()).is_err() {
                // The worker stopped early: its error is waiting in the output channel.
                self.collect(out, true)?;
                return Err(Error::corrupt(
                    "the age reader stopped before the input ended",
                ));
            }
        }
        self.collect(out, false)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        drop(self.tx.take());
        let r = self.collect(out, true);
        if let Some(w) = self.worker.take() {
            if w.join().is_err() {
                return Err(Error::new(
                    ErrorKind::Other,
                    "the age reader thread panicked",
                ));
            }
        }
        r
    }
}

impl Drop for AgeOpener {
    fn drop(&mut self) {
        // Closing the input ends the worker; it is not joined here, as it may be mid-read.
        drop(self.tx.take());
    }
}
