//! `drctl repo upgrade|trust|rotate-admin`: signing an existing repository, pinning its
//! administrative key on a host, and replacing that key.

use clap::Subcommand;
use dr::core::{Error, Result};
use serde_json::json;

use crate::args::RepoArgs;
use crate::output::{print_json, Output};

/// `drctl repo …`.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Sign an existing repository with --signing-key, which becomes its administrative key:
    /// dr-repo.json first, then every manifest. Run `drctl verify --all` first: whatever the
    /// bucket holds now is what gets signed. Re-running finishes an interrupted upgrade.
    Upgrade {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Pin the repository's current administrative key on this host, replacing the pin
    /// recorded before (after an administrator deliberately changed the key, or to
    /// provision a host before first use).
    Trust {
        #[command(flatten)]
        repo: RepoArgs,
        /// The administrative public key you expect (dr-ed25519-v1-…); refused if the
        /// repository names another.
        #[arg(long)]
        admin_key: String,
    },
    /// Replace the administrative key (--signing-key) with a new one: the new key re-signs
    /// the manifests the old one signed, and the old key signs a handover that hosts which
    /// pinned it follow on their next run. Keep the old key offline afterwards; if it was
    /// stolen, re-pin hosts with `drctl repo trust` instead of relying on the handover.
    RotateAdmin {
        #[command(flatten)]
        repo: RepoArgs,
        /// The new administrative key's file (`drctl keygen --signing`).
        #[arg(long, value_name = "FILE")]
        new_signing_key: std::path::PathBuf,
    },
}

pub async fn run(out: Output, cmd: RepoCommand) -> Result<()> {
    let store = dr::core::trust::TrustStore::from_env()
        .ok_or_else(|| Error::invalid("no place for pins: set DR_TRUST_DIR (or HOME)"))?;
    match cmd {
        RepoCommand::Upgrade { repo: args } => {
            let key = args.signing_key()?.ok_or_else(|| {
                Error::invalid(
                    "upgrading needs the key that becomes the administrative key: pass \
                     --signing-key FILE (create one with `drctl keygen --signing -o admin.key`)",
                )
            })?;
            // The pin is checked (a signed repository must be the one this host pinned).
            let policy = dr::core::trust::TrustPolicy {
                store: Some(store.clone()),
                require_signed: false,
            };
            let mut repo = dr::core::trust::open_trusted(args.storage()?, &policy)
                .await?
                .with_signing_key(key);
            let report = repo.upgrade().await?;
            let pin = store.pin(&repo)?;
            if out.is_json() {
                print_json(&json!({ "report": report, "pin": pin }));
            } else {
                println!(
                    "repository signed by administrative key {}: state {}, {} of {} manifests \
                     signed now; pinned in {}",
                    report.admin_key_id,
                    if report.signed_state {
                        "signed now"
                    } else {
                        "already signed"
                    },
                    report.manifests_signed,
                    report.backups,
                    pin.display()
                );
            }
            Ok(())
        }
        RepoCommand::Trust {
            repo: args,
            admin_key,
        } => {
            let expected = dr::core::signing::PublicKey::parse(&admin_key)?;
            let repo = dr::core::Repository::open(args.storage()?).await?;
            if repo.config().admin_key.as_deref() != Some(expected.to_string().as_str()) {
                return Err(Error::corrupt(format!(
                    "the repository is not signed by administrative key {}: not pinned",
                    expected.key_id()
                )));
            }
            let pin = store.pin(&repo)?;
            if out.is_json() {
                print_json(&json!({ "admin_key_id": expected.key_id(), "pin": pin }));
            } else {
                println!(
                    "pinned administrative key {} in {}",
                    expected.key_id(),
                    pin.display()
                );
            }
            Ok(())
        }
        RepoCommand::RotateAdmin {
            repo: args,
            new_signing_key,
        } => {
            let new = std::sync::Arc::new(dr::crypto::read_signing_key_file(&new_signing_key)?);
            let mut repo = args.open_for_writing().await?;
            let rotation = dr::writers::rotate_admin(&mut repo, new).await?;
            let pin = store.pin(&repo)?;
            if out.is_json() {
                print_json(&json!({ "rotation": rotation, "pin": pin }));
            } else {
                println!(
                    "administrative key {} handed over to {}; {} manifests re-signed; pinned \
                     in {}",
                    rotation.from,
                    rotation.to,
                    rotation.resigned,
                    pin.display()
                );
            }
            Ok(())
        }
    }
}

/// `drctl log`: the audit trail, oldest first, then any problem found in it.
pub async fn log(out: Output, args: &RepoArgs) -> Result<()> {
    let repo = args.open().await?;
    let trail = dr::core::audit::read_trail(&repo).await?;
    if out.is_json() {
        print_json(&trail);
    } else {
        if trail.entries.is_empty() {
            println!("no audit entries in {}", repo.storage().describe());
        }
        for e in &trail.entries {
            println!(
                "{:>4}  {}  {:<12}  {}  key {}  {}",
                e.seq,
                e.at.format("%Y-%m-%d %H:%M:%S UTC"),
                e.action,
                e.host,
                e.key_id,
                e.details
            );
        }
        for p in &trail.problems {
            println!("PROBLEM: {p}");
        }
    }
    if let Some(first) = trail.problems.first() {
        return Err(Error::corrupt(format!(
            "the audit trail is broken ({} problem(s)): {first}",
            trail.problems.len()
        )));
    }
    Ok(())
}
