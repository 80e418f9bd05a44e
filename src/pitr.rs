//! Point-in-time restore: a physical base backup plus archived WAL, recovered to a target.
//!
//! [`restore_to_point`] plans before it writes: it reads the cluster's WAL archive (its
//! timelines and which segments are there), chooses the newest base backup that was
//! consistent before the target (or checks the one asked for), and refuses an unreachable
//! target or a gap in one line — all before the data directory is touched. It then unpacks
//! the backup into the (empty) data directory and writes `recovery.signal` and the recovery
//! settings; starting the server runs the recovery, fetching WAL through `restore_command`.

use std::path::PathBuf;

use dr_core::wal::{base, plan_restore, RecoveryTarget, RestorePlan, TargetTimeline, WalArchive};
use dr_core::{
    Decryptor, Error, ErrorKind, Manifest, ReadOptions, Repository, Result, SeriesSelector,
};
use dr_db::wal::{RecoverySettings, TargetAction};
use dr_db::PhysicalRestorer;

/// What to restore, where, and to which point.
#[derive(Debug, Clone)]
pub struct PitrRequest {
    /// A base backup id; `None` (or `latest`) chooses the newest one before the target.
    pub backup: Option<String>,
    /// Which physical series (cluster), when the repository holds several.
    pub series: SeriesSelector,
    /// The empty (or missing) data directory to restore into.
    pub pgdata: PathBuf,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// What the server does there.
    pub action: TargetAction,
    /// Which timeline recovery follows.
    pub timeline: TargetTimeline,
    /// Leave `archive_mode` as it was in the backup (off by default).
    pub archive: bool,
    /// The `restore_command` the recovering server runs (`drctl wal-fetch … %f %p`).
    pub restore_command: String,
    /// Tablespaces restored elsewhere than beside the data directory: (original path, new
    /// path) pairs (see [`dr_db::tablespace_map`]).
    pub tablespaces: Vec<(PathBuf, PathBuf)>,
}

/// What [`restore_to_point`] did.
#[derive(Debug, Clone)]
pub struct PitrReport {
    /// The base backup restored.
    pub backup: Manifest,
    /// The plan: timeline path, segments needed, how far the archive reaches.
    pub plan: RestorePlan,
    /// The cluster's system identifier.
    pub system_identifier: u64,
}

/// The `restore_command` of a restored server: `drctl` (its path) fetching from the
/// repository at `repo_url` with the key file `key_file` and the storage options
/// `storage_opts`, each quoted for the shell PostgreSQL runs it with. A key file, never a
/// secret: the command line is visible to every user of the machine.
pub fn restore_command(
    drctl: &std::path::Path,
    repo_url: &str,
    key_file: &std::path::Path,
    storage_opts: &[String],
) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut cmd = format!(
        "{} wal-fetch --repo {} --key-file {}",
        quote(&drctl.display().to_string()),
        quote(repo_url),
        quote(&key_file.display().to_string())
    );
    for o in storage_opts {
        cmd.push_str(&format!(" --storage-opt {}", quote(o)));
    }
    cmd.push_str(" %f %p");
    cmd
}

/// Restore a base backup and prepare its recovery to `req.target`. See the module docs.
pub async fn restore_to_point(
    repo: &Repository,
    decryptor: &dyn Decryptor,
    req: &PitrRequest,
    opts: &ReadOptions,
) -> Result<PitrReport> {
    dr_db::physical::prepare_empty_pgdata(&req.pgdata)?;
    let selector = SeriesSelector::kind(base::PHYSICAL_KIND).and(&req.series)?;
    let manifests = repo.list_series(&selector).await?;
    let chosen = req.backup.as_deref().filter(|b| *b != "latest");
    let sysid = match chosen {
        Some(id) => {
            let m = manifests.iter().find(|m| m.id == id).ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no physical base backup '{id}' in {}",
                        repo.storage().describe()
                    ),
                )
            })?;
            base::system_identifier(m)?
        }
        None => {
            let mut clusters: Vec<u64> = manifests
                .iter()
                .map(base::system_identifier)
                .collect::<Result<_>>()?;
            clusters.sort_unstable();
            clusters.dedup();
            match clusters.as_slice() {
                [one] => *one,
                [] => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        "no physical base backup in the repository: take one with `drctl backup --physical`",
                    ))
                }
                many => {
                    return Err(Error::invalid(format!(
                        "the repository holds physical backups of {} clusters ({}); choose one \
                         with --series {}:<system id>:{}",
                        many.len(),
                        many.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                        base::PHYSICAL_KIND,
                        base::PHYSICAL_NAME
                    )))
                }
            }
        }
    };
    let of_cluster: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| base::system_identifier(m).ok() == Some(sysid))
        .collect();
    let backups = of_cluster
        .iter()
        .map(|m| base::base_backup(m))
        .collect::<Result<Vec<_>>>()?;
    let archive = WalArchive::open(repo, sysid).await?;
    let index = archive.index(true).await?;
    let plan = plan_restore(&index, &backups, chosen, &req.target, req.timeline)?;
    let manifest = of_cluster
        .into_iter()
        .find(|m| m.id == plan.backup)
        .expect("the plan chose one of the candidates")
        .clone();

    let restorer = req
        .tablespaces
        .iter()
        .fold(PhysicalRestorer::new(&req.pgdata), |r, (old, new)| {
            r.relocate_tablespace(old, new)
        });
    dr_core::restore(repo, &manifest, decryptor, &restorer, opts).await?;
    RecoverySettings {
        restore_command: req.restore_command.clone(),
        target: req.target.clone(),
        action: req.action,
        timeline: req.timeline,
        archive: req.archive,
    }
    .write(&req.pgdata)?;
    Ok(PitrReport {
        backup: manifest,
        plan,
        system_identifier: sysid,
    })
}
