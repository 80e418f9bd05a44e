//! One function per subcommand; each parses its inputs, calls the library, prints.

use std::time::Instant;

use dr::core::{
    BackupOptions, Codec, Error, ErrorKind, ReadOptions, RepoConfig, RepoDefaults, Repository,
    Result, SeriesSelector,
};
use serde_json::json;

use crate::args::{db_config, RepoArgs};
use crate::cli::Command;
use crate::output::{human_bytes, manifest_summary, print_json, Output};

/// Run `command`, printing its result as `out` says.
pub async fn run(command: Command, out: Output) -> Result<()> {
    match command {
        Command::Keygen {
            output,
            signing: true,
            ..
        } => crate::key::keygen_signing(out, &output),
        Command::Keygen {
            output,
            symmetric,
            age,
            ..
        } => crate::key::keygen(out, &output, symmetric, age),
        Command::Repo { command } => crate::repo::run(out, command).await,
        Command::Log { repo } => crate::repo::log(out, &repo).await,
        Command::Key { command } => crate::key::run(out, command).await,
        Command::Bench { command } => crate::bench::run(out, command).await,
        Command::Init {
            repo,
            compression,
            cipher,
            recipients,
            format,
            storage_class,
            object_lock_days,
        } => {
            init(
                out,
                &repo,
                &compression,
                &cipher,
                &recipients,
                &format,
                (storage_class, object_lock_days),
            )
            .await
        }
        Command::Backup {
            repo,
            db,
            dir,
            dedup,
            dedup_key_file,
            physical,
            pgdata,
            labels,
            compression,
            storage_class,
            jobs,
        } => {
            if let (true, Some(dir)) = (dedup, &dir) {
                let opts = crate::files::BackupArgs {
                    labels,
                    compression,
                    storage_class,
                    dedup_key_file,
                };
                return crate::files::backup(out, &repo, dir, opts).await;
            }
            if let Some(url) = dir.as_deref().and_then(|d| d.to_str()) {
                if dr::file_backups::is_bucket_url(url) {
                    return Err(Error::invalid(
                        "a bucket prefix is backed up as a deduplicated snapshot only: add --dedup",
                    ));
                }
            }
            if let (Some(db), true) = (&db, jobs > 1) {
                let dumper = dr::db::PgDumper::new(db_config(db)?);
                return backup(
                    out,
                    &repo,
                    Source::Pieces(&dumper, jobs),
                    labels,
                    compression,
                    storage_class,
                )
                .await;
            }
            let dumper: Box<dyn dr::core::Dumper> = match (db, dir) {
                (_, Some(dir)) => Box::new(dr::files::DirDumper::new(dir)),
                (Some(db), None) if physical => match pgdata {
                    Some(pgdata) => {
                        Box::new(dr::db::PhysicalCopyDumper::new(db_config(&db)?, pgdata))
                    }
                    None => Box::new(dr::db::PhysicalDumper::new(db_config(&db)?)),
                },
                (Some(db), None) => Box::new(dr::db::PgDumper::new(db_config(&db)?)),
                (None, None) => unreachable!("clap requires --db or --dir"),
            };
            backup(
                out,
                &repo,
                Source::Stream(dumper.as_ref()),
                labels,
                compression,
                storage_class,
            )
            .await
        }
        Command::List { repo, series } => list(out, &repo, &series.selector()).await,
        Command::Restore {
            repo,
            id,
            series,
            db,
            dir,
            to,
            storage_class,
            pitr,
            create,
            replace,
            no_owner,
            tables,
            jobs,
            include,
            exclude,
        } => {
            if pitr.pgdata.is_some() {
                return crate::wal::restore(out, &repo, &id, &series, &pitr).await;
            }
            if let Some(url) = &to {
                let selector = series.within(SeriesSelector::kind(dr::files::SOURCE_KIND))?;
                let manifest = repo.open().await?.resolve(&id, &selector).await?;
                let filter = dr::files::dedup::Selection::new(&include, &exclude)?;
                let to = crate::files::BucketTarget {
                    url,
                    storage_class,
                    replace,
                };
                return crate::files::restore_to_bucket(out, &repo, &manifest, &filter, to).await;
            }
            if (!include.is_empty() || !exclude.is_empty()) && dir.is_none() {
                return Err(Error::invalid(
                    "--include and --exclude take paths of deduplicated snapshots: restore with --dir or --to",
                ));
            }
            let usable = SeriesSelector::kind(if dir.is_some() {
                dr::files::SOURCE_KIND
            } else {
                dr::db::SOURCE_KIND
            });
            let selector = series.within(usable)?;
            if let Some(dir) = &dir {
                let manifest = repo.open().await?.resolve(&id, &selector).await?;
                if dr::files::dedup::is_snapshot(&manifest) {
                    let filter = dr::files::dedup::Selection::new(&include, &exclude)?;
                    return crate::files::restore(out, &repo, &manifest, dir, &filter, replace)
                        .await;
                }
                if !include.is_empty() || !exclude.is_empty() {
                    return Err(Error::invalid(format!(
                        "--include and --exclude take paths of deduplicated snapshots; backup \
                         '{}' is a tar archive: restore it whole",
                        manifest.id
                    )));
                }
            }
            let restorer = match (db, dir) {
                (_, Some(dir)) => Target::Files(dr::files::DirRestorer::new(dir).replace(replace)),
                (Some(db), None) => Target::Db(
                    Box::new(
                        dr::db::PgRestorer::new(db_config(&db)?)
                            .create(create)
                            .replace(replace)
                            .no_owner(no_owner)
                            .tables(tables),
                    ),
                    jobs,
                ),
                (None, None) => unreachable!("clap requires --db or --dir"),
            };
            restore(out, &repo, &id, &selector, restorer).await
        }
        Command::Verify {
            repo,
            id,
            series,
            all,
        } => verify(out, &repo, id, &series.selector(), all).await,
        Command::Drill(args) => crate::drill::run(out, args).await,
        Command::Status(args) => crate::status::run(out, args).await,
        Command::Report(args) => crate::report::run(args).await,
        Command::Diff(args) => crate::diff::run(out, args).await,
        Command::Cat {
            repo,
            id,
            series,
            dir: Some(dir),
            ..
        } => cat_dir(out, &repo, &id, &series.selector(), &dir).await,
        Command::Cat {
            repo,
            id,
            series,
            file: Some(file),
            ..
        } => crate::files::cat(&repo, &id, &series.selector(), &file).await,
        Command::Cat {
            repo, id, series, ..
        } => cat(&repo, &id, &series.selector()).await,
        Command::Ls {
            repo,
            id,
            path,
            series,
        } => crate::files::ls(out, &repo, &id, &series.selector(), path.as_deref()).await,
        Command::DedupKey { repo, output } => crate::files::export_key(out, &repo, &output).await,
        #[cfg(feature = "demo")]
        Command::Demo { scale } => crate::demo::run(out, scale).await,
        Command::Run { config, once } => crate::run::run(out, &config, once).await,
        Command::Replicate(args) => crate::replicate::run(out, args).await,
        Command::Lock { command } => crate::lock::run(out, command).await,
        Command::Pin(args) => crate::retention::pin(out, &args, true).await,
        Command::Unpin(args) => crate::retention::pin(out, &args, false).await,
        Command::Retention { command } => crate::retention::run(out, command).await,
        Command::Prune(args) => crate::retention::prune(out, &args).await,
        Command::WalPush(args) => crate::wal::push(out, args).await,
        Command::WalFetch(args) => match crate::wal::fetch(out, args).await {
            Ok(0) => Ok(()),
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("drctl wal-fetch: {}", e.report());
                std::process::exit(crate::wal::FETCH_FATAL)
            }
        },
        Command::WalReceive(args) => crate::wal::receive(out, args).await,
        Command::Wal { command } => crate::wal::state(out, command).await,
    }
}

async fn init(
    out: Output,
    args: &RepoArgs,
    compression: &str,
    cipher: &str,
    recipients: &[String],
    format: &str,
    (storage_class, object_lock_days): (Option<String>, Option<u32>),
) -> Result<()> {
    let compression: Codec = compression.parse()?;
    let cipher: dr::crypto::Cipher = cipher.parse()?;
    let encryption = crate::key::scheme(format)?;
    let keys = crate::key::init_keys(args, recipients, &encryption)?;
    dr::storage::create_local_dir(&args.repo)?;
    let storage = args.storage()?;
    let defaults = RepoDefaults {
        compression,
        cipher: if encryption == dr::crypto::AGE_SCHEME {
            "chacha20-poly1305".into()
        } else {
            cipher.to_string()
        },
        encryption,
        storage_class,
    };
    let key_id = keys
        .iter()
        .map(|k| k.id.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let admin = args.signing_key()?.ok_or_else(|| {
        Error::invalid(
            "init needs the administrative signing key that will sign the repository's keys \
             and retention policy: pass --signing-key FILE (or set DR_SIGNING_KEY); create one \
             with `drctl keygen --signing -o admin.key` and keep it on administrative hosts only",
        )
    })?;
    let config = RepoConfig {
        object_lock_days,
        ..RepoConfig::new(defaults, keys)?
    };
    let repo = Repository::init_signed(storage, config, admin).await?;
    if let Some(store) = dr::core::trust::TrustStore::from_env() {
        store.pin(&repo)?;
    }
    if out.is_json() {
        print_json(&json!({
            "repository_id": repo.config().repository_id,
            "url": repo.storage().describe(),
            "key_id": key_id,
        }));
    } else {
        println!(
            "initialised repository {} at {} (key {key_id}, {compression}, {cipher})",
            repo.config().repository_id,
            repo.storage().describe()
        );
    }
    Ok(())
}

/// What `backup` dumps: one stream, or a database as pieces over N connections.
enum Source<'a> {
    Stream(&'a dyn dr::core::Dumper),
    Pieces(&'a dr::db::PgDumper, usize),
}

async fn backup(
    out: Output,
    args: &RepoArgs,
    source: Source<'_>,
    labels: Vec<String>,
    compression: Option<String>,
    storage_class: Option<String>,
) -> Result<()> {
    let repo = args.open_for_writing().await?;
    repo.check_can_sign_manifests()?;
    let encryptor = crate::key::backup_encryptor(args, &repo)?;
    let bar = out.progress_bar("backup");
    let opts = BackupOptions {
        codec: compression.map(|c| c.parse()).transpose()?,
        labels,
        storage_class,
        progress: bar.as_ref().map(|(_, sink)| sink.clone()),
        ..Default::default()
    };
    let result = match source {
        Source::Stream(dumper) => dr::core::backup(&repo, dumper, &encryptor, &opts).await,
        Source::Pieces(dumper, jobs) => {
            dr::logical::backup(&repo, dumper, &encryptor, &opts, jobs).await
        }
    };
    if let Some((bar, _)) = bar {
        bar.finish_and_clear();
    }
    let m = result?;
    if out.is_json() {
        let mut out = manifest_summary(&m);
        out["upload_memory_budget_bytes"] = json!(args.upload_memory_budget()?);
        print_json(&out);
    } else {
        let secs = m.duration_ms() as f64 / 1000.0;
        let contents = if m.source.kind == dr::files::SOURCE_KIND {
            let files: u64 = m.stats.tables.iter().map(|t| t.rows).sum();
            format!("{files} files")
        } else {
            format!("{} tables", m.stats.tables.len())
        };
        println!(
            "backup {} complete: {} raw, {} stored ({:.1}x), {contents}, {:.1} s ({}/s)",
            m.id,
            human_bytes(m.raw_bytes),
            human_bytes(m.stored_bytes),
            m.raw_bytes as f64 / m.stored_bytes.max(1) as f64,
            secs,
            human_bytes((m.raw_bytes as f64 / secs.max(0.001)) as u64)
        );
    }
    Ok(())
}

/// The JSON shape of a backup in `backup` and `list` output.
async fn list(out: Output, args: &RepoArgs, series: &SeriesSelector) -> Result<()> {
    let repo = args.open().await?;
    let backups = repo.list_series(series).await?;
    let summaries: Vec<_> = backups.iter().map(manifest_summary).collect();
    out.result(&summaries, |_| {
        if backups.is_empty() {
            println!("no complete backups in {}", repo.storage().describe());
        }
        for m in &backups {
            println!(
                "{}  {}  {:>10} raw  {:>10} stored  {}{}",
                m.id,
                m.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                human_bytes(m.raw_bytes),
                human_bytes(m.stored_bytes),
                m.series,
                if m.labels.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", m.labels.join(", "))
                }
            );
        }
    });
    Ok(())
}

/// Where `restore` restores to.
enum Target {
    Files(dr::files::DirRestorer),
    Db(Box<dr::db::PgRestorer>, usize),
}

async fn restore(
    out: Output,
    args: &RepoArgs,
    id: &str,
    series: &SeriesSelector,
    target: Target,
) -> Result<()> {
    let repo = args.open().await?;
    let manifest = repo.resolve(id, series).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(args, &repo)?);
    let bar = out.progress_bar("restore");
    let opts = ReadOptions {
        progress: bar.as_ref().map(|(_, sink)| sink.clone()),
        ..Default::default()
    };
    let started = Instant::now();
    let result = match &target {
        Target::Files(restorer) => dr::core::restore(&repo, &manifest, &decryptor, restorer, &opts)
            .await
            .map(|r| (r, None)),
        Target::Db(restorer, jobs) => {
            dr::logical::restore(&repo, &manifest, &decryptor, restorer, *jobs, &opts).await
        }
    };
    if let Some((bar, _)) = bar {
        bar.finish_and_clear();
    }
    let (report, notice) = result?;
    if let Some(notice) = &notice {
        if !out.is_json() {
            eprintln!("note: {notice}");
        }
    }
    let ms = started.elapsed().as_millis() as u64;
    if out.is_json() {
        print_json(&json!({
            "id": manifest.id,
            "target": report.target,
            "tables_checked": report.tables_checked,
            "rows_checked": report.rows_checked,
            "replaced": report.replaced,
            "duration_ms": ms,
            "notice": notice,
        }));
    } else {
        let checked = if manifest.source.kind == dr::files::SOURCE_KIND {
            format!("{} files", report.rows_checked)
        } else {
            format!(
                "{} tables, {} rows",
                report.tables_checked, report.rows_checked
            )
        };
        println!(
            "restored backup {} into {}: {checked} checked against the manifest, {:.1} s",
            manifest.id,
            report.target,
            ms as f64 / 1000.0
        );
    }
    Ok(())
}

async fn verify(
    out: Output,
    args: &RepoArgs,
    id: Option<String>,
    series: &SeriesSelector,
    all: bool,
) -> Result<()> {
    let repo = args.open().await?;
    // Backups whose manifests fail authentication are failures of a full verify.
    // Backups whose manifests fail authentication, and a broken audit trail, are failures
    // of a full verify.
    let (rejected, trail_problems) = if all || id.is_none() {
        let trail = if repo.is_signed() {
            dr::core::audit::read_trail(&repo).await?.problems
        } else {
            Vec::new()
        };
        (repo.list_backups_and_rejected().await?.1, trail)
    } else {
        (Vec::new(), Vec::new())
    };
    let manifests = match (all, id) {
        (true, _) => repo.list_series(series).await?,
        (false, Some(id)) => vec![repo.resolve(&id, series).await?],
        (false, None) => repo.newest_per_series(series).await?,
    };
    if manifests.is_empty() && rejected.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no complete backups in {}", repo.storage().describe()),
        ));
    }
    let decryptor = dr::keys::decryptor(crate::key::unlock(args, &repo)?);
    let mut results = Vec::new();
    let mut first_error: Option<Error> = None;
    for p in &trail_problems {
        let e = Error::corrupt(p.clone());
        if !out.is_json() {
            println!("audit trail: FAILED: {p}");
        }
        results.push(
            json!({ "id": "audit trail", "ok": false, "error": p, "kind": e.kind().as_str() }),
        );
        first_error.get_or_insert(e);
    }
    for r in &rejected {
        let e = Error::corrupt(format!(
            "backup '{}' is not authenticated: {}",
            r.id, r.cause
        ));
        if !out.is_json() {
            println!("{}: FAILED: {}", r.id, e.report());
        }
        results.push(
            json!({ "id": r.id, "ok": false, "error": e.report(), "kind": e.kind().as_str() }),
        );
        first_error.get_or_insert(e);
    }
    for m in &manifests {
        let bar = out.progress_bar(&format!("verify {}", m.id));
        let opts = ReadOptions {
            progress: bar.as_ref().map(|(_, sink)| sink.clone()),
            ..Default::default()
        };
        let outcome = dr::verify::verify_backup(&repo, m, &decryptor, &opts).await;
        if let Some((bar, _)) = bar {
            bar.finish_and_clear();
        }
        match outcome {
            Ok(r) => {
                if !out.is_json() {
                    println!(
                        "{}: ok ({} stored, {} raw, {} tables / {} rows re-counted)",
                        r.id,
                        human_bytes(r.stored_bytes),
                        human_bytes(r.raw_bytes),
                        r.tables_checked,
                        r.rows_checked
                    );
                }
                results.push(json!({ "id": r.id, "ok": true, "report": r }));
            }
            Err(e) => {
                if !out.is_json() {
                    println!("{}: FAILED: {}", m.id, e.report());
                }
                results.push(json!({ "id": m.id, "ok": false, "error": e.report(), "kind": e.kind().as_str() }));
                first_error.get_or_insert(e);
            }
        }
    }
    let snapshots = manifests.iter().any(dr::files::dedup::is_snapshot);
    if (snapshots || all) && dr::file_backups::has_packs(&repo).await? {
        let r = dr::file_backups::verify_packs(&repo, &decryptor).await?;
        let ok = r.problems.is_empty();
        if !out.is_json() {
            if ok {
                println!(
                    "file packs: ok ({} packs, {} chunks, {} read; {} snapshots' chunks all present)",
                    r.packs,
                    r.chunks,
                    human_bytes(r.bytes),
                    r.snapshots
                );
            }
            for p in &r.problems {
                println!("file packs: FAILED: {p}");
            }
        }
        if let Some(p) = r.problems.first() {
            first_error.get_or_insert(Error::corrupt(p.clone()));
        }
        results.push(json!({ "id": "file packs", "ok": ok, "report": r }));
    }
    // A full verify also checks that the archived WAL continues from every base backup.
    if all {
        for c in dr::verify::wal_continuity(&repo).await? {
            let id = format!("WAL of cluster {}", c.system_identifier);
            if c.problems.is_empty() {
                if !out.is_json() {
                    println!(
                        "{id}: ok (every one of {} base backups has its WAL, no gap)",
                        c.backups.len()
                    );
                }
                results.push(json!({ "id": id, "ok": true, "report": c }));
            } else {
                let e = Error::corrupt(c.problems.join("; "));
                if !out.is_json() {
                    println!("{id}: FAILED: {}", e.report());
                }
                results.push(json!({ "id": id, "ok": false, "error": e.report(), "kind": e.kind().as_str(), "report": c }));
                first_error.get_or_insert(e);
            }
        }
    }
    if out.is_json() {
        print_json(&results);
    }
    match first_error {
        None => Ok(()),
        Some(e) if results.len() == 1 => Err(e),
        Some(e) => Err(Error::new(
            e.kind(),
            format!(
                "{} of {} backups failed verification",
                results.iter().filter(|r| r["ok"] == false).count(),
                results.len()
            ),
        )),
    }
}

async fn cat_dir(
    out: Output,
    args: &RepoArgs,
    id: &str,
    series: &SeriesSelector,
    dir: &std::path::Path,
) -> Result<()> {
    let repo = args.open().await?;
    let manifest = repo.resolve(id, series).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(args, &repo)?);
    let bytes =
        dr::logical::write_dir(&repo, &manifest, &decryptor, dir, &ReadOptions::default()).await?;
    if out.is_json() {
        print_json(&json!({
            "id": manifest.id,
            "dir": dir,
            "files": manifest.objects.len(),
            "bytes": bytes,
        }));
    } else {
        println!(
            "wrote backup {} into {}: {} files, {} (restore with `pg_restore -Fd {}`)",
            manifest.id,
            dir.display(),
            manifest.objects.len(),
            human_bytes(bytes),
            dir.display()
        );
    }
    Ok(())
}

async fn cat(args: &RepoArgs, id: &str, series: &SeriesSelector) -> Result<()> {
    let repo = args.open().await?;
    let manifest = repo.resolve(id, series).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(args, &repo)?);
    let mut stdout = tokio::io::stdout();
    dr::logical::write_one_stream(
        &repo,
        &manifest,
        &decryptor,
        &mut stdout,
        &ReadOptions::default(),
    )
    .await?;
    Ok(())
}
