//! dr-core: the vocabulary and engine of dr.
//!
//! The plug-in traits ([`Dumper`], [`Restorer`], [`StorageTarget`], [`Encryptor`],
//! [`Decryptor`]), the codecs, the manifest and repository layout, and the pipelines that join
//! them: dump → compress → encrypt → store, and back. dr-core knows no concrete backend.
#![deny(missing_docs)]

pub mod audit;
pub mod codec;
pub mod crypto;
pub mod error;
pub mod source;
pub mod stage;
pub mod storage;

pub use codec::Codec;
pub use crypto::{Decryptor, EncryptionInfo, Encryptor, WrappedKey};
pub use error::{Error, ErrorKind, Result, ResultExt};
pub use source::{
    ConsistentPoint, Dump, DumpCompletion, DumpStats, Dumper, RestoreReport, Restorer, SourceInfo,
    TableStats,
};
pub use stage::{spawn_transform, ByteStream, StageOptions, Transform};
pub use storage::{ObjectMeta, ObjectWriter, PutOptions, StorageExt, StorageTarget};

pub mod lease;
pub mod manifest;
pub mod names;
pub mod pipeline;
pub mod progress;
pub mod prune;
pub mod redact;
pub mod replicate;
pub mod repo;
pub mod retention;
pub mod schedule;
pub mod series;
pub mod signing;
pub mod trust;
pub mod upgrade;

pub use manifest::{Manifest, ObjectEntry};
pub use pipeline::{backup, open_payload, restore, verify, BackupOptions, ReadOptions};
pub use progress::{ProgressEvent, ProgressSink, Stage};
pub use prune::{prune, PruneOptions, PruneReport, Undeletable};
pub use repo::{RepoConfig, RepoDefaults, RepoKey, RepoWriter, Repository};
pub use retention::{BackupInfo, Decision, RetentionDuration, RetentionPolicy, SeriesPolicies};
pub use series::{Series, SeriesSelector};
