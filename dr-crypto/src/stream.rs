//! The chunked AEAD stream: header, payload key, STREAM nonces, sealing and opening.
//!
//! See FORMAT.md for the byte layout. Both transforms work in place on the caller's output
//! buffer: the encryptor copies each chunk's plaintext once, into `out`, and seals it there;
//! the decryptor copies each stored chunk once, into `out`, opens it there, and cuts `out`
//! back if authentication fails, so `out` only ever grows by authenticated plaintext.

use dr_core::{Error, ErrorKind, Result, Transform};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use zeroize::Zeroize;

use crate::cipher::{Cipher, KEY_BYTES, TAG_BYTES};

/// The first 8 bytes of every stream: `DRAEAD`, a zero byte, format version 1.
pub const MAGIC: [u8; 8] = *b"DRAEAD\x00\x01";
/// Bytes in a stream header: magic, cipher id, chunk size, salt.
pub const HEADER_BYTES: usize = 8 + 1 + 4 + SALT_BYTES;
/// Bytes of the random salt in the header.
pub const SALT_BYTES: usize = 32;
/// Plaintext bytes per chunk unless chosen otherwise: 64 KiB.
pub const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;
/// The smallest chunk size a stream may declare: 1 KiB.
pub const MIN_CHUNK_BYTES: usize = 1024;
/// The largest chunk size a stream may declare: 16 MiB.
pub const MAX_CHUNK_BYTES: usize = 16 * 1024 * 1024;

const PAYLOAD_INFO: &[u8] = b"dr-aead-v1 payload";

/// The fields of a stream header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) cipher: Cipher,
    pub(crate) chunk_bytes: usize,
    pub(crate) salt: [u8; SALT_BYTES],
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[..8].copy_from_slice(&MAGIC);
        h[8] = self.cipher.id();
        // The chunk size was checked against MAX_CHUNK_BYTES, so it fits in a u32.
        h[9..13].copy_from_slice(&(self.chunk_bytes as u32).to_be_bytes());
        h[13..].copy_from_slice(&self.salt);
        h
    }

    pub(crate) fn decode(h: &[u8; HEADER_BYTES]) -> Result<Header> {
        if h[..7] != MAGIC[..7] {
            return Err(Error::corrupt(
                "not a dr-aead-v1 stream: the first bytes are not the DRAEAD magic",
            ));
        }
        if h[7] != MAGIC[7] {
            return Err(Error::corrupt(format!(
                "the stream header declares format version {} but the manifest says dr-aead-v1 \
                 (version 1)",
                h[7]
            )));
        }
        let cipher = Cipher::from_id(h[8]).ok_or_else(|| {
            Error::corrupt(format!(
                "the stream header names unknown cipher id {:#04x}",
                h[8]
            ))
        })?;
        let chunk_bytes = u32::from_be_bytes([h[9], h[10], h[11], h[12]]) as usize;
        check_chunk_bytes(chunk_bytes).map_err(|_| {
            Error::corrupt(format!(
                "the stream header declares a chunk size of {chunk_bytes} bytes, outside \
                 {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}"
            ))
        })?;
        let mut salt = [0u8; SALT_BYTES];
        salt.copy_from_slice(&h[13..]);
        Ok(Header {
            cipher,
            chunk_bytes,
            salt,
        })
    }
}

/// Whether `n` is an allowed chunk size.
pub(crate) fn check_chunk_bytes(n: usize) -> Result<()> {
    if (MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&n) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "chunk size {n} bytes is outside the allowed {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}"
        )))
    }
}

/// The label hashed with a piece's name into its stream's salt.
const PIECE_SALT_LABEL: &[u8] = b"dr-aead-v1 piece ";

/// The header salt of piece `name` of a pieces payload: SHA-256("dr-aead-v1 piece " ||
/// name). All pieces share the backup's data key; the salt, derived from the name, gives
/// each its own payload key and binds the stream to the name, so a piece stored in
/// another's place fails [`StreamOpener::expect_salt`]'s check.
pub(crate) fn piece_salt(name: &str) -> [u8; SALT_BYTES] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(PIECE_SALT_LABEL);
    ctx.update(name.as_bytes());
    let mut salt = [0u8; SALT_BYTES];
    salt.copy_from_slice(ctx.finish().as_ref());
    salt
}

/// The payload key: HKDF-SHA256(ikm = data key, salt = header salt,
/// info = "dr-aead-v1 payload" || header), 32 bytes, as a ready AEAD key. The raw bytes never
/// leave ring.
fn payload_key(
    data_key: &[u8; KEY_BYTES],
    header: &[u8; HEADER_BYTES],
    cipher: Cipher,
) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &header[13..]).extract(data_key);
    let info = [PAYLOAD_INFO, &header[..]];
    let okm = prk
        .expand(&info, cipher.algorithm())
        .expect("32 bytes is far below HKDF-SHA256's output limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// The STREAM nonce: the chunk counter as 11 big-endian bytes, then 0x01 for the final chunk
/// or 0x00 for any other.
fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn counter_overflow() -> Error {
    Error::corrupt("the stream has more chunks than the chunk counter allows (2^64 - 1)")
}

/// Cuts a byte stream into chunks of one size and holds back the newest chunk until it is
/// known whether more follows: in dr-aead-v1 only the final chunk is sealed as the last.
struct Chunker {
    size: usize,
    /// Bytes held back: at most one chunk.
    held: Vec<u8>,
}

impl Chunker {
    fn new(size: usize) -> Chunker {
        Chunker {
            size,
            held: Vec::with_capacity(size),
        }
    }

    /// Hand every chunk of `input` known not to be the last to `chunk`, in order; hold back
    /// the rest (at most one chunk).
    fn feed(&mut self, mut input: &[u8], mut chunk: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let size = self.size;
        while !input.is_empty() {
            if self.held.len() == size {
                // More input follows, so the held chunk is not the last one.
                chunk(&self.held)?;
                self.held.clear();
            }
            if self.held.is_empty() && input.len() > size {
                let (whole, rest) = input.split_at(size);
                chunk(whole)?;
                input = rest;
                continue;
            }
            let take = (size - self.held.len()).min(input.len());
            self.held.extend_from_slice(&input[..take]);
            input = &input[take..];
        }
        Ok(())
    }

    /// Bytes of output the chunks of `more` input give at most, for `out.reserve`.
    fn output_bound(&self, more: usize, bytes_per_chunk: usize) -> usize {
        (self.held.len() + more) / self.size * bytes_per_chunk
    }
}

impl Drop for Chunker {
    fn drop(&mut self) {
        // The sealer holds plaintext here.
        self.held.zeroize();
    }
}

/// Append `plaintext` sealed as chunk number `counter`, and count it.
fn seal_chunk(
    key: &LessSafeKey,
    counter: &mut u64,
    plaintext: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    if *counter == u64::MAX {
        return Err(counter_overflow());
    }
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(nonce(*counter, last), Aad::empty(), &mut out[start..])
        .map_err(|_| Error::new(ErrorKind::Other, "sealing a chunk failed"))?;
    out.extend_from_slice(tag.as_ref());
    *counter += 1;
    Ok(())
}

/// Append the plaintext of the stored chunk number `counter`, and count it. On failure
/// `out` is left as it was.
fn open_chunk(
    key: &LessSafeKey,
    counter: &mut u64,
    stored: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    if *counter == u64::MAX {
        return Err(counter_overflow());
    }
    let start = out.len();
    out.extend_from_slice(stored);
    let opened = key
        .open_in_place(nonce(*counter, last), Aad::empty(), &mut out[start..])
        .map(|p| p.len());
    match opened {
        Ok(len) => {
            out.truncate(start + len);
            *counter += 1;
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            // Work out the likeliest cause for the message; `stored` is still intact.
            let mut scratch = stored.to_vec();
            let other = key
                .open_in_place(nonce(*counter, !last), Aad::empty(), &mut scratch)
                .is_ok();
            scratch.zeroize();
            let n = *counter;
            Err(Error::corrupt(match (other, last) {
                (true, true) => format!(
                    "the stream is truncated: it ends after chunk {n}, which is not its final chunk"
                ),
                (true, false) => format!(
                    "unexpected data after the final chunk {n}: the stored object has bytes appended"
                ),
                (false, _) => format!(
                    "authentication failed at chunk {n}: the stored data was modified, \
                     truncated, or belongs to another backup"
                ),
            }))
        }
    }
}

/// Seals plaintext into a dr-aead-v1 stream.
pub(crate) struct StreamSealer {
    header: Option<[u8; HEADER_BYTES]>,
    key: LessSafeKey,
    chunks: Chunker,
    counter: u64,
    finished: bool,
}

impl StreamSealer {
    pub(crate) fn new(data_key: &[u8; KEY_BYTES], header: Header) -> StreamSealer {
        let encoded = header.encode();
        StreamSealer {
            key: payload_key(data_key, &encoded, header.cipher),
            header: Some(encoded),
            chunks: Chunker::new(header.chunk_bytes),
            counter: 0,
            finished: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_counter_for_test(&mut self, counter: u64) {
        self.counter = counter;
    }

    fn emit_header(&mut self, out: &mut Vec<u8>) {
        if let Some(h) = self.header.take() {
            out.extend_from_slice(&h);
        }
    }
}

impl Transform for StreamSealer {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::new(ErrorKind::Other, "update after finish"));
        }
        self.emit_header(out);
        out.reserve(
            self.chunks
                .output_bound(input.len(), self.chunks.size + TAG_BYTES),
        );
        let (key, counter) = (&self.key, &mut self.counter);
        self.chunks
            .feed(input, |chunk| seal_chunk(key, counter, chunk, false, out))
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::new(ErrorKind::Other, "finish called twice"));
        }
        self.finished = true;
        self.emit_header(out);
        out.reserve(self.chunks.held.len() + TAG_BYTES);
        seal_chunk(&self.key, &mut self.counter, &self.chunks.held, true, out)?;
        self.chunks.held.zeroize();
        Ok(())
    }
}

/// Opens a dr-aead-v1 stream, releasing only authenticated plaintext.
pub(crate) struct StreamOpener {
    /// The data key until the header has been read; wiped as soon as the payload key exists.
    data_key: Option<Box<[u8; KEY_BYTES]>>,
    expected_cipher: Cipher,
    /// The salt the header must carry (a piece's, see [`piece_salt`]), if any.
    expected_salt: Option<[u8; SALT_BYTES]>,
    header: Vec<u8>,
    key: Option<LessSafeKey>,
    /// Stored chunks (ciphertext and tag); sized once the header is read.
    chunks: Chunker,
    counter: u64,
    finished: bool,
}

impl StreamOpener {
    pub(crate) fn new(data_key: Box<[u8; KEY_BYTES]>, expected_cipher: Cipher) -> StreamOpener {
        StreamOpener {
            data_key: Some(data_key),
            expected_cipher,
            expected_salt: None,
            header: Vec::with_capacity(HEADER_BYTES),
            key: None,
            chunks: Chunker::new(0),
            counter: 0,
            finished: false,
        }
    }

    /// Require the header's salt to be `salt`: the stream must be the piece it is opened as.
    pub(crate) fn expect_salt(mut self, salt: [u8; SALT_BYTES]) -> StreamOpener {
        self.expected_salt = Some(salt);
        self
    }

    #[cfg(test)]
    pub(crate) fn set_counter_for_test(&mut self, counter: u64) {
        self.counter = counter;
    }

    /// Take header bytes from the front of `input`; the payload key once the header is
    /// complete.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<Option<&LessSafeKey>> {
        if self.key.is_none() {
            let take = (HEADER_BYTES - self.header.len()).min(input.len());
            self.header.extend_from_slice(&input[..take]);
            *input = &input[take..];
            if self.header.len() < HEADER_BYTES {
                return Ok(None);
            }
            let mut encoded = [0u8; HEADER_BYTES];
            encoded.copy_from_slice(&self.header);
            let header = Header::decode(&encoded)?;
            if header.cipher != self.expected_cipher {
                return Err(Error::corrupt(format!(
                    "the stream header names cipher {} but the manifest says {}: the stream and \
                     its manifest do not belong together",
                    header.cipher, self.expected_cipher
                )));
            }
            if self.expected_salt.is_some_and(|salt| salt != header.salt) {
                return Err(Error::corrupt(
                    "the stream was sealed for another piece of the backup: the stored pieces \
                     were swapped or replaced",
                ));
            }
            let mut data_key = self
                .data_key
                .take()
                .ok_or_else(|| Error::new(ErrorKind::Other, "data key already used"))?;
            self.key = Some(payload_key(&data_key, &encoded, header.cipher));
            data_key.zeroize();
            self.chunks = Chunker::new(header.chunk_bytes + TAG_BYTES);
        }
        Ok(self.key.as_ref())
    }
}

impl Drop for StreamOpener {
    fn drop(&mut self) {
        if let Some(key) = self.data_key.as_mut() {
            key.zeroize();
        }
    }
}

impl Transform for StreamOpener {
    fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::new(ErrorKind::Other, "update after finish"));
        }
        if self.read_header(&mut input)?.is_none() {
            return Ok(());
        }
        out.reserve(self.chunks.output_bound(input.len(), self.chunks.size));
        let key = self.key.as_ref().expect("the header was read");
        let counter = &mut self.counter;
        self.chunks
            .feed(input, |chunk| open_chunk(key, counter, chunk, false, out))
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::new(ErrorKind::Other, "finish called twice"));
        }
        self.finished = true;
        let Some(key) = self.key.as_ref() else {
            return Err(Error::corrupt(format!(
                "the stream is truncated: it has {} bytes, fewer than its {HEADER_BYTES}-byte header",
                self.header.len()
            )));
        };
        let n = self.counter;
        let last = &self.chunks.held;
        if last.len() < TAG_BYTES {
            return Err(Error::corrupt(if last.is_empty() && n == 0 {
                "the stream is truncated: it ends after the header, before its first chunk"
                    .to_owned()
            } else {
                format!(
                    "the stream is truncated: chunk {n} is shorter than its {TAG_BYTES}-byte tag"
                )
            }));
        }
        if last.len() == TAG_BYTES && n > 0 {
            return Err(Error::corrupt(format!(
                "chunk {n} is an empty final chunk, which only an empty stream may have"
            )));
        }
        open_chunk(key, &mut self.counter, last, true, out)?;
        self.chunks.held.clear();
        Ok(())
    }
}
