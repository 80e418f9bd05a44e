//! dr-core: the vocabulary and engine of dr.
//!
//! A backup and its read-back on the memory store, with dr-crypto's cipher; a real backup
//! puts a [`Dumper`] of a database (dr-db's `PgDumper`) in front and a cloud bucket behind:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
//! use dr_core::{BackupOptions, BufferDumper, ReadOptions, RepoConfig, RepoDefaults, Repository};
//! use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};
//!
//! // A repository: its config object on a storage target (`s3://bucket/prefix` in production).
//! let defaults = RepoDefaults {
//!     compression: "zstd:3".parse()?,
//!     encryption: dr_crypto::SCHEME.into(),
//!     cipher: "aes-256-gcm".into(),
//!     storage_class: None,
//! };
//! let storage = dr_storage::from_url("memory://")?;
//! let repo = Repository::init(storage, RepoConfig::new(defaults, vec![])?).await?;
//!
//! // Back up: dump → compress → encrypt → store in parts, then the manifest commits it.
//! let key = MasterKey::generate()?;
//! let encryptor = AeadEncryptor::new(Cipher::Aes256Gcm, vec![key.clone()])?;
//! let source = BufferDumper::new("id,city\n1,Lisbon\n2,Oslo\n").named("cities");
//! let manifest = dr_core::backup(&repo, &source, &encryptor, &BackupOptions::default()).await?;
//! assert_eq!(repo.list_backups().await?[0].id, manifest.id);
//!
//! // Read it back: fetch → decrypt → decompress, every part checked against the manifest.
//! let decryptor = AeadDecryptor::new(vec![key]);
//! let payload = dr_core::open_payload(&repo, &manifest, &decryptor, &ReadOptions::default()).await?;
//! assert_eq!(dr_core::stage::collect(payload).await?, b"id,city\n1,Lisbon\n2,Oslo\n");
//! # Ok(()) }
//! ```
//!
//! The plug-in traits ([`Dumper`], [`Restorer`], [`StorageTarget`], [`Encryptor`],
//! [`Decryptor`]), the codecs, the manifest and repository layout, and the pipelines that join
//! them: dump → compress → encrypt → store, and back. dr-core knows no concrete backend: the
//! example's store and cipher come from dr-storage and dr-crypto (dev-dependencies here).
#![deny(missing_docs)]

pub mod buffer;
pub mod codec;
pub mod crypto;
pub mod error;
pub mod source;
pub mod stage;
pub mod storage;

pub use buffer::BufferDumper;
pub use codec::Codec;
pub use crypto::{Decryptor, EncryptionInfo, Encryptor, PieceSealer, WrappedKey};
pub use error::{Error, ErrorKind, Result, ResultExt};
pub use source::{
    ConsistentPoint, Dump, DumpCompletion, DumpStats, Dumper, PayloadCheck, RestoreReport,
    Restorer, SourceInfo, TableStats,
};
pub use stage::{spawn_transform, ByteStream, StageOptions, Transform};
pub use storage::{ObjectMeta, ObjectWriter, PutOptions, StorageExt, StorageTarget};

pub mod lease;
pub mod manifest;
pub mod names;
pub mod pieces;
pub mod pipeline;
pub mod progress;
pub mod prune;
pub mod records;
pub mod redact;
pub mod replicate;
pub mod repo;
// The audit trail and admin handovers are part of the repository's signed state.
pub use repo::{audit, handover};
pub mod retention;
pub mod schedule;
pub mod series;
pub mod signing;
pub mod trust;
pub mod upgrade;
pub mod wal;

pub use manifest::{Manifest, ObjectEntry};
pub use pieces::{
    backup_pieces, restore_pieces, Piece, PieceDumper, PieceRestorer, PieceSource, PiecesDump,
    RepoPieces,
};
pub use pipeline::{backup, open_payload, restore, verify, BackupOptions, ReadOptions};
pub use progress::{ProgressEvent, ProgressSink, Stage};
pub use prune::{prune, PruneOptions, PruneReport, Undeletable};
pub use repo::{RepoConfig, RepoDefaults, RepoKey, RepoWriter, Repository};
pub use retention::{BackupInfo, Decision, RetentionDuration, RetentionPolicy, SeriesPolicies};
pub use series::{Series, SeriesSelector};
