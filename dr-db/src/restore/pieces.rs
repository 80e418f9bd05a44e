//! The parallel restore of a backup taken as pieces (`drctl restore --jobs N`): pg_restore
//! reads a directory archive whose data files are FIFOs fed from the repository.

use std::collections::BTreeSet;

use async_trait::async_trait;
use dr_core::pieces::{PieceRestorer, PieceSource};
use dr_core::{DumpStats, Error, ErrorKind, RestoreReport, Result, SourceInfo};

use super::{copy, write_list, Input, PgRestorer, Split};
use crate::directory::{DIRECTORY_FORMAT, TOC_PIECE};
use crate::{fifo, tools};

/// Restores a `pg_dump-directory` payload (a backup taken as pieces) with
/// `pg_restore -Fd -j N` ([`PgRestorer::jobs`]), streaming: `toc.dat` (and a large-object
/// list) is written to a private folder, every data file is a FIFO there, and each piece is
/// streamed into its FIFO when pg_restore opens it. Everything else is as for one stream:
/// the same plans (create, empty target, scratch database swapped in), row counts checked,
/// and a failed piece leaves nothing half-restored.
///
/// With `jobs > 1` the table data does not go through pg_restore: the schema is restored
/// first (`--section=pre-data`), then dr streams each table's piece into a `COPY` of its
/// own over `jobs` connections (see [`copy`]: its rows are checked from `COPY`'s command
/// tag as it ends), then pg_restore restores the rest (`--section=data
/// --section=post-data`: sequences, large objects through FIFOs, indexes, constraints).
#[async_trait]
impl PieceRestorer for PgRestorer {
    async fn restore_pieces(
        &self,
        source: &SourceInfo,
        expected: &DumpStats,
        pieces: &dyn PieceSource,
    ) -> Result<RestoreReport> {
        if source.format != DIRECTORY_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the PostgreSQL restorer reads pieces in the {DIRECTORY_FORMAT} format, not {:?}",
                    source.format
                ),
            ));
        }
        let target = self.target_name()?;
        let program =
            tools::find_program(self.bin_dir.as_deref(), "pg_restore", tools::INSTALL_CLIENT)?;
        let names = pieces.names();
        if !names.iter().any(|n| n == TOC_PIECE) {
            return Err(Error::corrupt("the backup has no toc.dat piece"));
        }
        let dir = tempfile::Builder::new()
            .prefix("dr-restore-")
            .tempdir()
            .map_err(|e| Error::io("cannot create the archive folder", e))?;
        // The TOC files, whole and checked, before anything touches the target.
        let mut toc_bytes = Vec::new();
        let mut fifos = Vec::new();
        for name in &names {
            if name == TOC_PIECE || name.ends_with(".toc") {
                let bytes = dr_core::stage::collect(pieces.open(name).await?).await?;
                if name == TOC_PIECE {
                    toc_bytes = bytes.clone();
                }
                tokio::fs::write(dir.path().join(name), &bytes)
                    .await
                    .map_err(|e| Error::io(format!("cannot write {name}"), e))?;
            } else {
                fifos.push(name.clone());
            }
        }
        let mut inspector = crate::archive::ArchiveInspector::directory_toc();
        inspector.feed(&toc_bytes)?;
        let toc = inspector.finish_directory()?;
        let (list, expected, wanted) = if self.tables.is_empty() {
            (None, expected.clone(), None)
        } else {
            if self.replace {
                return Err(Error::invalid(
                    "restoring some tables replaces nothing: restore them into a new or empty database",
                ));
            }
            let (list, expected, ids) = self.partial_list(&toc.toc, expected)?;
            (Some(list), expected, Some(ids))
        };
        if self.jobs > 1 {
            let wanted_set = wanted.as_ref().map(|ids| ids.iter().copied().collect());
            let loads = copy::plan(&toc, pieces, wanted_set.as_ref());
            let loaded: BTreeSet<i64> = loads.iter().map(|l| l.dump_id).collect();
            let loaded_pieces: BTreeSet<&str> = loads.iter().map(|l| l.piece.as_str()).collect();
            let all_ids = toc.toc.iter().map(|e| e.dump_id).collect();
            let rest: String = wanted
                .unwrap_or(all_ids)
                .into_iter()
                .filter(|id| !loaded.contains(id))
                .map(|id| format!("{id};\n"))
                .collect();
            let rest_list = write_list(&rest)?;
            fifos.retain(|f| !loaded_pieces.contains(f.as_str()));
            fifo::make_fifos(dir.path(), &fifos)?;
            let input = Input::Split(Split {
                dir: dir.path(),
                fifos,
                pieces,
                session: copy::session_sql(&toc),
                loads,
                schema_list: list.as_deref(),
                rest_list: &rest_list,
                all_read: self.tables.is_empty(),
            });
            return self
                .restore_input(source, &target, &program, None, &expected, input, true)
                .await;
        }
        fifo::make_fifos(dir.path(), &fifos)?;
        let input = Input::Pieces {
            dir: dir.path(),
            fifos,
            pieces,
        };
        self.restore_input(
            source,
            &target,
            &program,
            list.as_deref(),
            &expected,
            input,
            self.jobs > 1,
        )
        .await
    }
}
