//! Keys: `drctl keygen`, the keys `init` registers, the key a command unlocks, and
//! `drctl key list|add|revoke|rotate`.

use std::path::Path;

use clap::Subcommand;
use dr::core::{Error, ErrorKind, RepoKey, Repository, Result};
use dr::crypto::{Identity, Recipient};
use dr::keys::{KeySource, RepoEncryptor};
use serde_json::json;

use crate::args::RepoArgs;
use crate::output::{print_json, Output};

/// `drctl key …`: the repository's keys.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the repository's keys and how many backups each opens.
    List {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Add a public recipient and wrap every backup's data key for it (manifests only).
    /// --key-file (or DR_KEY_FILE, DR_PASSPHRASE) is a current key, used to unwrap.
    Add {
        #[command(flatten)]
        repo: RepoArgs,
        /// The new public recipient (dr-x25519-v1-… from `drctl keygen`).
        #[arg(long)]
        recipient: String,
    },
    /// Revoke a key: remove it from the repository and from every backup's manifest.
    Revoke {
        #[command(flatten)]
        repo: RepoArgs,
        /// The key id to revoke (see `drctl key list`).
        key_id: String,
    },
    /// Add a new recipient and revoke the key in --key-file, in one step.
    Rotate {
        #[command(flatten)]
        repo: RepoArgs,
        /// The new public recipient (dr-x25519-v1-… from `drctl keygen`).
        #[arg(long)]
        new_recipient: String,
    },
    /// List a backup host's signing key as a writer: its signed manifests are accepted.
    /// Needs the administrative key (--signing-key).
    AddWriter {
        #[command(flatten)]
        repo: RepoArgs,
        /// The writer's public key (dr-ed25519-v1-… from `drctl keygen --signing`).
        #[arg(long)]
        public_key: String,
        /// A name for people, e.g. the host.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove a writer key; the backups it signed are re-signed with the administrative key.
    RemoveWriter {
        #[command(flatten)]
        repo: RepoArgs,
        /// The writer key id (see `drctl key list`).
        key_id: String,
    },
}

/// `drctl keygen`: an X25519 identity (default), a symmetric key, or an age identity.
pub fn keygen(out: Output, output: &Path, symmetric: bool, age: bool) -> Result<()> {
    let identity: Identity = if symmetric {
        dr::crypto::MasterKey::generate()?.into()
    } else if age {
        dr::crypto::AgeIdentity::generate().into()
    } else {
        dr::crypto::X25519Identity::generate()?.into()
    };
    dr::crypto::write_identity_file(output, &identity)?;
    let recipient = identity.to_recipient().public_text();
    if out.is_json() {
        print_json(&json!({
            "key_id": identity.key_id(),
            "kind": identity.kind(),
            "recipient": recipient,
            "path": output,
        }));
    } else if let Some(r) = recipient {
        // The recipient alone on stdout, so that `R=$(drctl keygen -o F)` works.
        println!("{r}");
        eprintln!(
            "wrote identity {} to {}; its public recipient is above. Keep the file offline: \
             without it, no backup encrypted to it can be restored",
            identity.key_id(),
            output.display()
        );
    } else {
        println!("wrote key {} to {}", identity.key_id(), output.display());
        println!("keep a copy somewhere safe: without it, no backup made with it can be restored");
    }
    Ok(())
}

/// The secret the user supplied, if any: a key file, or a passphrase from the environment.
pub fn key_source(args: &RepoArgs) -> Option<KeySource> {
    if let Some(path) = &args.key_file {
        return Some(KeySource::File(path.clone()));
    }
    match std::env::var("DR_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Some(KeySource::Passphrase(dr::crypto::Passphrase::new(p))),
        _ => None,
    }
}

/// The key entries `init` registers: the supplied key (if any) and every `--recipient`,
/// checked against the repository's encryption scheme by [`dr::keys::initial_keys`].
pub fn init_keys(args: &RepoArgs, recipients: &[String], scheme: &str) -> Result<Vec<RepoKey>> {
    dr::keys::initial_keys(key_source(args).as_ref(), recipients, scheme)
}

/// The encryption scheme of a `--format`: `dr` (dr-aead-v1) or `age`.
pub fn scheme(format: &str) -> Result<String> {
    match format {
        "dr" | "dr-aead-v1" => Ok(dr::crypto::SCHEME.into()),
        "age" => Ok(dr::crypto::AGE_SCHEME.into()),
        other => Err(Error::invalid(format!(
            "unknown --format {other:?}: use dr (default) or age"
        ))),
    }
}

/// The identity that opens backups, for restore, cat and verify. Without any key given the
/// error names the keys that would open the repository's backups.
pub fn unlock(args: &RepoArgs, repo: &Repository) -> Result<Identity> {
    match key_source(args) {
        Some(source) => source.unlock(repo.config()),
        None => Err(Error::new(
            ErrorKind::WrongKey,
            format!(
                "no key given, and reading backups needs a secret key of this repository: one \
                 of {}; pass --key-file FILE (or set DR_KEY_FILE), or set DR_PASSPHRASE",
                dr::keys::describe_keys(repo.config())
            ),
        )),
    }
}

/// The encryptor for `backup`: with a key given, it must be a repository key; without one,
/// the repository's public recipients are enough.
pub fn backup_encryptor(args: &RepoArgs, repo: &Repository) -> Result<RepoEncryptor> {
    match key_source(args) {
        Some(source) => dr::keys::encryptor(repo, source.unlock(repo.config())?),
        None => dr::keys::public_encryptor(repo),
    }
}

async fn open(args: &RepoArgs) -> Result<Repository> {
    args.open_for_writing().await
}

/// `drctl keygen --signing`: an Ed25519 signing key; its public key alone on stdout.
pub fn keygen_signing(out: Output, output: &Path) -> Result<()> {
    let key = dr::crypto::generate_signing_key_file(output)?;
    if out.is_json() {
        print_json(&json!({
            "key_id": key.key_id(),
            "kind": "ed25519-signing",
            "public_key": key.public_key().to_string(),
            "path": output,
        }));
    } else {
        println!("{}", key.public_key());
        eprintln!(
            "wrote signing key {} to {}; its public key is above. As an administrative key \
             (drctl init / repo upgrade) keep it on administrative hosts only; as a writer key \
             have an administrator run `drctl key add-writer --public-key …`",
            key.key_id(),
            output.display()
        );
    }
    Ok(())
}

fn required_key(args: &RepoArgs, repo: &Repository, what: &str) -> Result<Identity> {
    match key_source(args) {
        Some(source) => {
            let config = repo.config();
            // A rotation interrupted after the key list changed is re-run with the old key,
            // which is then no longer listed: accept any key file here and let the library
            // check it against the keys and the manifests.
            match &source {
                KeySource::File(path) => dr::crypto::read_identity_file(path),
                KeySource::Passphrase(_) => source.unlock(config),
            }
        }
        None => Err(Error::invalid(format!(
            "{what} needs a current key of the repository to unwrap data keys: pass --key-file \
             FILE (or set DR_KEY_FILE), or set DR_PASSPHRASE"
        ))),
    }
}

pub async fn run(out: Output, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::List { repo } => list(out, &repo).await,
        KeyCommand::AddWriter {
            repo,
            public_key,
            name,
        } => {
            let mut r = open(&repo).await?;
            let public = dr::core::signing::PublicKey::parse(&public_key)?;
            let added = dr::writers::add_writer(&mut r, &public, &name).await?;
            if out.is_json() {
                print_json(&json!({ "key_id": public.key_id(), "added": added }));
            } else if added {
                println!("added writer key {}", public.key_id());
            } else {
                println!("writer key {} was already listed", public.key_id());
            }
            Ok(())
        }
        KeyCommand::RemoveWriter { repo, key_id } => {
            let mut r = open(&repo).await?;
            let resigned = dr::writers::remove_writer(&mut r, &key_id).await?;
            if out.is_json() {
                print_json(&json!({ "key_id": key_id, "resigned": resigned }));
            } else {
                println!("removed writer key {key_id}; re-signed {resigned} of its backups");
            }
            Ok(())
        }
        KeyCommand::Add { repo, recipient } => {
            let mut r = open(&repo).await?;
            let opener = required_key(&repo, &r, "adding a key")?;
            let new = Recipient::parse(&recipient)?;
            let report = dr::keys::add_key(&mut r, &opener, new).await?;
            print_report(out, "added", &report);
            Ok(())
        }
        KeyCommand::Revoke { repo, key_id } => {
            let mut r = open(&repo).await?;
            let opener = match key_source(&repo) {
                Some(_) => Some(required_key(&repo, &r, "revoking a key")?),
                None => None,
            };
            let report = dr::keys::revoke_key(&mut r, opener.as_ref(), &key_id).await?;
            print_report(out, "revoked", &report);
            Ok(())
        }
        KeyCommand::Rotate {
            repo,
            new_recipient,
        } => {
            let mut r = open(&repo).await?;
            let old = required_key(&repo, &r, "rotating")?;
            let new = Recipient::parse(&new_recipient)?;
            let report = dr::keys::rotate_key(&mut r, &old, new).await?;
            print_report(out, "rotated", &report);
            Ok(())
        }
    }
}

async fn list(out: Output, args: &RepoArgs) -> Result<()> {
    let repo = args.open().await?;
    let backups = repo.list_backups().await?;
    let rows: Vec<serde_json::Value> = repo
        .config()
        .keys
        .iter()
        .map(|k| {
            let opens = backups
                .iter()
                .filter(|m| m.encryption.key_ids().contains(&k.id.as_str()))
                .count();
            json!({
                "id": k.id,
                "kind": k.kind,
                "added_at": k.added_at,
                "recipient": k.recipient,
                "backups": opens,
            })
        })
        .collect();
    if out.is_json() {
        print_json(&json!({ "keys": rows, "backups": backups.len() }));
        return Ok(());
    }
    for r in &rows {
        println!(
            "{}  {:<10}  added {}  opens {} of {} backups{}",
            r["id"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["added_at"].as_str().unwrap_or(""),
            r["backups"],
            backups.len(),
            r["recipient"]
                .as_str()
                .map(|s| format!("  {s}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn print_report(out: Output, verb: &str, report: &dr::keys::RewrapReport) {
    out.result(report, |r| {
        println!(
            "{verb}: {} backups, {} manifests gained wrapped keys, {} lost revoked ones; {} WAL \
             files, {} records gained, {} lost; {} ms; keys now {}",
            r.backups,
            r.wraps_added,
            r.wraps_removed,
            r.wal_files,
            r.wal_wraps_added,
            r.wal_wraps_removed,
            r.duration_ms,
            r.keys.join(", ")
        )
    });
}
