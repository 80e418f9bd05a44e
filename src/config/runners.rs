//! From a validated `dr.toml` to scheduler jobs with dr's runners ([`crate::jobs`]).

use std::sync::Arc;

use dr_core::schedule::{Job, JobKind};
use dr_core::{Error, Repository, Result};

use super::types::Config;

impl Config {
    /// The jobs with dr's runners ([`crate::jobs`]) for `repo`: opens the key once (a
    /// passphrase's KDF is slow) and checks it against the repository.
    pub fn build_jobs(&self, repo: &Repository) -> Result<Vec<Job>> {
        let identity = match self.key_source()? {
            Some(source) => Some(source.unlock(repo.config())?),
            None => None,
        };
        // Verify and drill jobs read backups: they need the key itself.
        let decryptor = |job: &str| -> Result<Arc<dyn dr_core::Decryptor>> {
            let key = identity.clone().ok_or_else(|| {
                Error::invalid(format!("job '{job}' reads backups, which needs a [key]"))
            })?;
            Ok(Arc::new(crate::keys::decryptor(key)))
        };
        let mut jobs = Vec::new();
        for jc in &self.jobs {
            let runner: Arc<dyn dr_core::schedule::JobRunner> = match &jc.kind {
                JobKind::Backup => {
                    let encryptor = match &identity {
                        Some(key) => crate::keys::encryptor(repo, key.clone())?,
                        None => crate::keys::public_encryptor(repo)?,
                    };
                    let mut labels = self.labels.clone();
                    labels.extend(jc.labels.iter().cloned());
                    if let (Some(dir), true) = (&jc.dir, jc.dedup) {
                        let decryptor = identity.clone().map(|k| {
                            Arc::new(crate::keys::decryptor(k)) as Arc<dyn dr_core::Decryptor>
                        });
                        let mut backup = crate::jobs::FilesBackupJob::new(
                            dir.clone(),
                            Arc::new(encryptor),
                            decryptor,
                        )
                        .labels(labels);
                        if let Some(codec) = jc.compression {
                            backup = backup.codec(codec);
                        }
                        if let Some(class) = &jc.storage_class {
                            backup = backup.storage_class(class.clone());
                        }
                        jobs.push(scheduled(jc, Arc::new(backup)));
                        continue;
                    }
                    let mut backup = match &jc.dir {
                        Some(dir) => crate::jobs::BackupJob::new(
                            Arc::new(dr_files::DirDumper::new(dir)),
                            Arc::new(encryptor),
                        ),
                        None if jc.physical => crate::jobs::BackupJob::new(
                            match &jc.pgdata {
                                Some(pgdata) => Arc::new(dr_db::PhysicalCopyDumper::new(
                                    self.database_config()?,
                                    pgdata,
                                )),
                                None => {
                                    Arc::new(dr_db::PhysicalDumper::new(self.database_config()?))
                                        as Arc<dyn dr_core::Dumper>
                                }
                            },
                            Arc::new(encryptor),
                        ),
                        None if jc.jobs > 1 => crate::jobs::BackupJob::pieces(
                            Arc::new(dr_db::PgDumper::new(self.database_config()?).jobs(jc.jobs)),
                            Arc::new(encryptor),
                            jc.jobs,
                        ),
                        None => crate::jobs::BackupJob::new(
                            Arc::new(dr_db::PgDumper::new(self.database_config()?)),
                            Arc::new(encryptor),
                        ),
                    }
                    .labels(labels);
                    if let Some(codec) = jc.compression {
                        backup = backup.codec(codec);
                    }
                    if let Some(class) = &jc.storage_class {
                        backup = backup.storage_class(class.clone());
                    }
                    Arc::new(backup)
                }
                JobKind::Prune => Arc::new(crate::jobs::PruneJob::new(self.retention_policies()?)),
                JobKind::Verify => {
                    Arc::new(crate::jobs::VerifyJob::new(decryptor(&jc.name)?).all(jc.all))
                }
                JobKind::Drill if jc.physical => {
                    let mut opts =
                        crate::physical_drill::PhysicalDrillOptions::new(self.restore_command()?);
                    opts.objectives = self.objectives;
                    opts.checks = self.checks.clone();
                    opts.checks_database = self
                        .database_config()
                        .ok()
                        .and_then(|c| c.get_dbname().map(str::to_string));
                    Arc::new(crate::jobs::PhysicalDrillJob::new(
                        decryptor(&jc.name)?,
                        opts,
                    ))
                }
                JobKind::Drill => Arc::new(crate::jobs::DrillJob::new(
                    decryptor(&jc.name)?,
                    self.drill_config()?,
                    self.objectives,
                    self.checks.clone(),
                )),
                JobKind::Replicate => {
                    let to = jc.to.as_ref().ok_or_else(|| {
                        Error::invalid(format!("job '{}' has no destination", jc.name))
                    })?;
                    let in_job = |e: Error| e.with_context("job", &jc.name);
                    dr_storage::create_local_dir(&to.url).map_err(in_job)?;
                    let storage = dr_storage::open(&to.url, &to.options.iter().collect::<Vec<_>>())
                        .map_err(in_job)?
                        .retrying();
                    Arc::new(crate::jobs::ReplicateJob::new(
                        storage,
                        dr_core::replicate::ReplicateOptions {
                            storage_class: to.storage_class.clone(),
                            verify: to.verify,
                            lease_wait: Some(std::time::Duration::from_secs(60)),
                        },
                    ))
                }
                JobKind::Custom(kind) => {
                    return Err(Error::invalid(format!(
                        "job '{}' has kind '{kind}', which dr.toml cannot run",
                        jc.name
                    )))
                }
            };
            jobs.push(scheduled(jc, runner));
        }
        Ok(jobs)
    }
}

/// The scheduler job of `jc` with `runner`: its schedule and follow-ups.
fn scheduled(jc: &super::types::JobConfig, runner: Arc<dyn dr_core::schedule::JobRunner>) -> Job {
    let mut job = Job::new(jc.name.clone(), jc.kind.clone(), runner);
    if let Some(s) = &jc.schedule {
        job = job.schedule(s.clone());
    }
    for t in &jc.then {
        job = job.then(t.clone());
    }
    job
}
