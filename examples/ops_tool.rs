//! A small custom ops tool built on the dr library: report on a repository and verify its
//! newest backup, the way an internal dashboard or a nightly check would.
//!
//! ```sh
//! DR_KEY_FILE=repo.key cargo run --example ops_tool -- /srv/backups
//! ```

use dr::core::{ReadOptions, Repository};
use dr::keys::KeySource;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("ops_tool: {}", e.report());
        std::process::exit(1);
    }
}

async fn run() -> dr::core::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| dr::core::Error::invalid("usage: ops_tool REPOSITORY_URL"))?;
    let key_file = std::env::var("DR_KEY_FILE")
        .map_err(|_| dr::core::Error::invalid("set DR_KEY_FILE to the repository's key file"))?;
    let repo = Repository::open(dr::storage::from_url(&url)?).await?;

    let backups = repo.list_backups().await?;
    let incomplete = repo.list_incomplete().await?;
    let stored: u64 = backups.iter().map(|m| m.stored_bytes).sum();
    println!(
        "{}: {} complete backups, {} incomplete, {} bytes stored",
        repo.storage().describe(),
        backups.len(),
        incomplete.len(),
        stored
    );
    let Some(newest) = backups.first() else {
        println!("nothing to verify");
        return Ok(());
    };
    let age = chrono::Utc::now() - newest.finished_at;
    println!("newest: {} ({} minutes old)", newest.id, age.num_minutes());

    let key = KeySource::File(key_file.into()).unlock(repo.config())?;
    let report = dr::verify::verify_backup(
        &repo,
        newest,
        &dr::keys::decryptor(key),
        &ReadOptions::default(),
    )
    .await?;
    println!(
        "verified {}: {} tables, {} rows re-counted from the payload",
        report.id, report.tables_checked, report.rows_checked
    );
    Ok(())
}
