//! `drctl replicate`: copy complete backups to a second storage target (another region).

use clap::Args;
use dr::core::replicate::{replicate, ReplicateOptions, Selection};
use dr::core::{Error, Result};

use crate::output::{human_bytes, Output};

/// Arguments of `drctl replicate`.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// The source repository, checked against this host's pin like any other command; with
    /// a signing key, the replication is recorded in its audit trail.
    #[command(flatten)]
    pub repo: crate::args::RepoArgs,
    /// Destination URL (created as a replica of the source if it holds no repository).
    #[arg(long)]
    pub to: String,
    /// A storage setting KEY=VALUE for the destination (repeatable), e.g. region=eu-west-1,
    /// endpoint=…. Credentials come from the cloud's environment variables.
    #[arg(long = "to-storage-opt", value_name = "KEY=VALUE")]
    pub to_storage_opts: Vec<String>,
    /// Backup ids (or `latest`) to copy.
    pub ids: Vec<String>,
    /// Copy every complete backup.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Storage class for the data objects at the destination (e.g. GLACIER, Archive).
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Read every copied object back from the destination and check its SHA-256
    /// (otherwise its size is checked there; the hash is always checked in transit).
    #[arg(long)]
    pub verify: bool,
    /// Wait up to this many seconds for the destination's exclusive lease if another
    /// process holds it (default: fail at once).
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
}

pub async fn run(out: Output, args: ReplicateArgs) -> Result<()> {
    let selection = if args.all {
        Selection::All
    } else if args.ids.is_empty() {
        return Err(Error::invalid(
            "name the backups to replicate (ID... or latest), or pass --all",
        ));
    } else {
        Selection::Ids(args.ids.clone())
    };
    let src = args.repo.open().await?;
    dr::storage::create_local_dir(&args.to)?;
    let dst = crate::storage::open(&args.to, &args.to_storage_opts)?.retrying();
    let opts = ReplicateOptions {
        storage_class: args.storage_class.clone(),
        verify: args.verify,
        lease_wait: args.lock_wait.map(std::time::Duration::from_secs),
    };
    let report = replicate(&src, dst.clone(), selection, &opts).await?;
    out.result(&report, |report| {
        for id in &report.copied {
            println!("{id}: copied");
        }
        for id in &report.skipped {
            println!("{id}: already at the destination");
        }
        println!(
            "replicated {} backups ({}) to {} in {:.1} s; {} already there{}",
            report.copied.len(),
            human_bytes(report.bytes_copied),
            dst.describe(),
            report.duration_ms as f64 / 1000.0,
            report.skipped.len(),
            if report.verified {
                "; every copied object read back and checked"
            } else {
                ""
            }
        );
    });
    Ok(())
}
