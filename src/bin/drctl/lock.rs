//! `drctl lock list` and `drctl lock break`: leases, for humans.

use clap::Subcommand;
use dr::core::{lease, Repository, Result};
use serde_json::json;

use crate::output::print_json;

/// `drctl lock …`
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Show every lease in the repository: holder, purpose, expiry, state.
    List {
        /// Repository URL.
        #[arg(long, env = "DR_REPO")]
        repo: String,
        /// A storage setting KEY=VALUE (repeatable).
        #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
        storage_opts: Vec<String>,
    },
    /// Break a lease (`exclusive`, `job-NAME`) left by a process that is gone. A live holder
    /// loses it at its next renewal and stops at its next check.
    Break {
        /// Repository URL.
        #[arg(long, env = "DR_REPO")]
        repo: String,
        /// A storage setting KEY=VALUE (repeatable).
        #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
        storage_opts: Vec<String>,
        /// The lease's name, as `drctl lock list` shows it.
        name: String,
    },
}

pub async fn run(json: bool, command: LockCommand) -> Result<()> {
    match command {
        LockCommand::List { repo, storage_opts } => {
            let repo = crate::storage::open(&repo, &storage_opts)?.retrying();
            let repo = Repository::open(repo).await?;
            let leases = lease::list(&repo).await?;
            if json {
                print_json(&leases);
                return Ok(());
            }
            if leases.is_empty() {
                println!("no leases in {}", repo.storage().describe());
            }
            for l in &leases {
                println!(
                    "{:<24} {:<8} {} pid {}  '{}'  since {}  until {}",
                    l.name,
                    l.state,
                    l.info.owner.host,
                    l.info.owner.pid,
                    l.info.purpose,
                    l.info.acquired_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    l.info.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
                );
            }
            Ok(())
        }
        LockCommand::Break {
            repo,
            storage_opts,
            name,
        } => {
            let repo = crate::storage::open(&repo, &storage_opts)?.retrying();
            let repo = Repository::open(repo).await?;
            let displaced = lease::break_lease(&repo, &name).await?;
            if json {
                print_json(
                    &json!({ "name": name, "broken": displaced.is_some(), "holder": displaced }),
                );
            } else {
                match displaced {
                    Some(h) => println!(
                        "broke lease '{name}' held by {} for '{}'",
                        h.owner, h.purpose
                    ),
                    None => println!("lease '{name}' was not held"),
                }
            }
            Ok(())
        }
    }
}
