//! Deduplicated, incremental file backups (`dr-files-v1`), in the manner of restic and
//! rustic: files cut into content-defined chunks, each chunk stored once per repository
//! (across backups and hosts), compressed and encrypted inside packs; a snapshot is a
//! normal dr backup whose payload is the tree (paths, modes, times, chunk lists).
//! FORMAT.md, "Deduplicated file backups", specifies the bytes.

mod backup;
mod check;
mod chunker;
mod hex32;
mod key;
mod layout;
mod new_chunks;
mod pack;
mod plan;
mod reader;
mod readers;
mod restore;
mod restore_bucket;
mod sorted_file;
mod source;
mod spool;
mod tree;
mod unpack;
mod walk;
mod wrapped;
mod write_tree;

pub use backup::{
    backup_tree, backup_tree_with_readers, commit_snapshot, default_readers, FileCounts,
    FilesReport,
};
pub use check::{prune_packs, verify_packs, PackPruneOptions, PackPruneReport, PackVerifyReport};
pub use chunker::{ChunkBuffer, ChunkSizes, Chunker, CHUNK_SIZES};
pub use key::{
    load_dedup_key, load_or_create_dedup_key, ChunkId, DedupKey, DEDUP_KEY_FILE_PREFIX,
    DEDUP_KEY_PATH,
};
pub use pack::{
    Blob, BlobCodec, BlobCompressor, BlobEntry, Catalog, OpenPack, PackBuilder, PackIndex,
    INDEX_PREFIX, PACKS_PREFIX, PACK_TARGET_BYTES,
};
pub use restore::{
    cat_file, is_snapshot, list, read_tree, restore_tree, restore_tree_in_batches,
    FilesRestoreReport, Selection,
};
pub use restore_bucket::restore_to_bucket;
pub use source::TreeSource;
pub use spool::ParentTree;
pub use tree::{check_relative_path, EntryKind, Tree, TreeEntry, TreeHeader, TREE_FORMAT};
pub use wrapped::{rewrite_wrapped, wrapped_objects, WrappedObject};
pub use write_tree::BatchLimits;
