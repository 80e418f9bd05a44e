//! `dr.toml`: one file that says what to back up, where to, with which key, when, how long
//! to keep it, and what the recovery objectives are. `drctl run --config dr.toml` runs it;
//! programs that embed dr load the same [`Config`] and build their [`Scheduler`] from it.
//!
//! ```toml
//! labels = ["prod"]                       # recorded in every backup
//!
//! [repository]
//! url = "s3://backups/prod"               # or file:///srv/backups, a directory, memory://
//! options = { region = "eu-west-1" }      # storage options (credentials: environment)
//!
//! [database]
//! url = "postgres://app@db.internal:5432/app"
//! password_env = "PGPASSWORD"             # the password comes only from the environment
//!
//! [key]
//! file = "/etc/dr/repo.key"               # or: passphrase_env = "DR_PASSPHRASE"
//!
//! [objectives]
//! rpo = "1h"                              # outcomes say whether the newest backup is within it
//! rto = "30m"                             # drills fail beyond it
//!
//! [retention]                             # restic's forget rules, per series (dr::core::retention)
//! keep_hourly = 24
//! keep_daily = 7
//!
//! [windows.maintenance]                   # first Sunday of the month, 02:00–04:00 UTC
//! start = "0 2 * * SUN#1"
//! length = "2h"
//!
//! [jobs.hourly]
//! kind = "backup"                         # backup, prune, verify, drill, replicate, wal-receive
//! cron = "0 * * * *"
//! time_zone = "UTC"                       # IANA name; UTC by default
//! jitter = "5m"
//! not_in = "maintenance"                  # or only_in = "maintenance"
//! missed = "skip"                         # or run_once (default)
//! labels = ["hourly"]                    # as drctl backup: labels, compression, storage_class
//! compression = "zstd:3"                  # else the repository's default
//! then = ["prune"]
//!
//! [jobs.uploads]
//! kind = "backup"
//! dir = "/srv/app/uploads"                # a directory instead of the database
//! dedup = true                            # deduplicated incremental snapshots, not a tar
//! cron = "30 * * * *"
//! retention = { keep_daily = 30 }         # this source's own policy (else [retention])
//!
//! [jobs.qr-images]
//! kind = "backup"
//! dir = "s3://qr-app-images/prod/"         # a bucket prefix (s3://, gs://, az://, file://)
//! dedup = true                            # required for a bucket: unchanged objects by ETag
//! storage_class = "GLACIER"               # this job's data class (QR images)
//! cron = "15 * * * *"
//!
//! [jobs.prune]
//! kind = "prune"                          # no cron: it runs after the backups
//!
//! [jobs.wal]
//! kind = "wal-receive"                    # streams WAL continuously (restarted if it ends)
//! spool = "/var/lib/dr/wal-spool"         # slot = "dr_receive", interval = "2s"
//!
//! [monitoring]                            # dr::monitoring: /metrics, /healthz, webhooks
//! listen = "127.0.0.1:9187"
//! webhooks = [{ url_env = "DR_SLACK_WEBHOOK", format = "slack" }]
//! ```
//!
//! Validation is strict, so that a typo is an error rather than a silently different
//! schedule: unknown keys are refused, cron expressions, time zones, durations and
//! references to windows and jobs are checked, and every error names the key and, where
//! the file has it, the line (`line 14: jobs.hourly.cron: …`). Durations are whole numbers
//! with units `s`, `m` (minutes), `h`, `d` (`90s`, `1h30m`, `7d`); the retention table's
//! durations use restic's units instead (`m` is months there).
//!
//! Secrets never appear in the file: the database password comes from the environment
//! variable `database.password_env` (default `PGPASSWORD`, or `~/.pgpass`), a passphrase
//! from `key.passphrase_env`, and a URL with a password in it is refused.

mod job_section;
mod raw;
mod runners;
mod sections;
mod types;

use std::path::Path;
use std::str::FromStr;

use dr_core::schedule::{Scheduler, SchedulerOptions};
use dr_core::{Error, ErrorKind, Repository, Result, SeriesPolicies, SeriesSelector};

use crate::keys::KeySource;
use sections::parse;
pub use types::{
    Config, DatabaseConfig, JobConfig, KeyConfig, ReceiveConfig, ReplicaConfig, RepositoryConfig,
    SchedulerConfig,
};

impl FromStr for Config {
    type Err = Error;

    /// Parse and validate a `dr.toml` text. Relative key paths stay relative to the current
    /// directory; [`Config::from_path`] makes them relative to the file.
    fn from_str(text: &str) -> Result<Config> {
        parse(text, None)
    }
}

impl Config {
    /// Read, parse and validate the file at `path`. Errors carry the file as context.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Error::new(
                kind,
                format!("cannot read the configuration file {}", path.display()),
            )
            .with_source(e)
        })?;
        parse(&text, path.parent()).map_err(|e| e.with_context("file", path.display()))
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The policies prune jobs apply: `[retention]` for every series, except the series of
    /// backup jobs that carry a `retention` of their own (a directory job: `files` backups
    /// of that directory on this host; a database job: `postgres` backups of the database
    /// `[database]` names).
    pub fn retention_policies(&self) -> Result<SeriesPolicies> {
        let mut policies = SeriesPolicies::new(self.retention.clone());
        for job in &self.jobs {
            if let Some(policy) = &job.retention {
                policies.set(self.series_of(job)?, policy.clone());
            }
        }
        Ok(policies)
    }

    /// The series a backup job's backups belong to, as far as the file tells.
    fn series_of(&self, job: &JobConfig) -> Result<SeriesSelector> {
        if job.physical {
            // One cluster's base backups: postgres-physical:<system id>:cluster.
            return Ok(SeriesSelector {
                kind: Some(dr_core::wal::base::PHYSICAL_KIND.into()),
                name: Some(dr_core::wal::base::PHYSICAL_NAME.into()),
                ..Default::default()
            });
        }
        Ok(match &job.dir {
            Some(dir) => SeriesSelector {
                kind: Some(dr_files::SOURCE_KIND.into()),
                origin: Some(dr_core::names::host_name()),
                name: Some(crate::file_backups::source_name(dir)?),
                word: None,
            },
            None => {
                let db = self.database_config()?;
                SeriesSelector {
                    kind: Some(dr_db::SOURCE_KIND.into()),
                    name: db.get_dbname().or(db.get_user()).map(str::to_owned),
                    ..Default::default()
                }
            }
        })
    }

    /// Open the repository, retrying transient storage errors with the default policy (a
    /// daemon must ride out a dropped connection).
    pub async fn open_repository(&self) -> Result<Repository> {
        let storage = dr_storage::open(
            &self.repository.url,
            &self.repository.options.iter().collect::<Vec<_>>(),
        )?
        .retrying();
        // Signed state is checked against this host's pin; manifests are signed with the
        // key in DR_SIGNING_KEY, if any (see `dr::writers`).
        let policy = dr_core::trust::TrustPolicy {
            store: dr_core::trust::TrustStore::from_env(),
            require_signed: false,
        };
        let repo = dr_core::trust::open_trusted(storage, &policy).await?;
        Ok(match crate::writers::signing_key_from_env()? {
            Some(key) => repo.with_signing_key(key),
            None => repo,
        })
    }

    /// The key source, reading a passphrase from its environment variable. `None` without
    /// a `[key]`.
    pub fn key_source(&self) -> Result<Option<KeySource>> {
        match &self.key {
            KeyConfig::None => Ok(None),
            KeyConfig::File(p) => Ok(Some(KeySource::File(p.clone()))),
            KeyConfig::PassphraseEnv(var) => match std::env::var(var) {
                Ok(p) if !p.is_empty() => {
                    Ok(Some(KeySource::Passphrase(dr_crypto::Passphrase::new(p))))
                }
                _ => Err(Error::invalid(format!(
                    "key.passphrase_env names {var}, which is not set: export the passphrase in {var}"
                ))),
            },
        }
    }

    /// The database connection: `database.url` completed from the libpq environment, with
    /// the password from `database.password_env` ([`dr_db::config_from_url`]).
    pub fn database_config(&self) -> Result<tokio_postgres::Config> {
        let db = self.database.as_ref().ok_or_else(|| {
            Error::invalid("the configuration has no [database] (backup jobs need one)")
        })?;
        dr_db::config_from_url(&db.url, &db.password_env)
    }

    /// The `restore_command` a physical drill's server fetches WAL with: this program (which
    /// must be drctl: `drctl run`), the repository and the key file.
    pub fn restore_command(&self) -> Result<String> {
        let KeyConfig::File(key) = &self.key else {
            return Err(Error::invalid(
                "a physical drill needs [key] file = …: the restored server's restore_command reads the WAL with it",
            ));
        };
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("cannot tell where drctl is installed", e))?;
        let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let url = if std::path::Path::new(&self.repository.url).exists() {
            abs(std::path::Path::new(&self.repository.url))
                .display()
                .to_string()
        } else {
            self.repository.url.clone()
        };
        let opts: Vec<String> = self
            .repository
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Ok(crate::pitr::restore_command(&exe, &url, &abs(key), &opts))
    }

    /// Where drills restore to: the database `<database>_drill` on the database's server,
    /// created and dropped by each drill.
    pub fn drill_config(&self) -> Result<tokio_postgres::Config> {
        let mut config = self.database_config()?;
        let name = config
            .get_dbname()
            .ok_or_else(|| Error::invalid("database.url names no database"))?
            .to_string();
        config.dbname(format!("{name}_drill"));
        Ok(config)
    }

    /// The scheduler's options: the RPO and concurrency from this file, the system clock.
    pub fn scheduler_options(&self) -> SchedulerOptions {
        SchedulerOptions {
            rpo: self.objectives.rpo,
            max_concurrent: self.scheduler.max_concurrent,
            ..SchedulerOptions::default()
        }
    }

    /// Open the repository and build a [`Scheduler`] for every job (not started).
    pub async fn scheduler(&self) -> Result<Scheduler> {
        let repo = self.open_repository().await?;
        let jobs = self.build_jobs(&repo)?;
        Scheduler::new(repo, self.scheduler_options(), jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_core::schedule::MissedRuns;
    use dr_core::Codec;

    const MINIMAL: &str = r#"
[repository]
url = "memory://"

[database]
url = "postgres://app@127.0.0.1:5432/app"

[jobs.nightly]
kind = "backup"
cron = "0 2 * * *"
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c: Config = MINIMAL.parse().unwrap();
        assert_eq!(c.jobs.len(), 1);
        let s = c.jobs[0].schedule.as_ref().unwrap();
        assert_eq!(s.cron.as_str(), "0 2 * * *");
        assert_eq!(s.missed, MissedRuns::RunOnce);
        assert_eq!(c.database.unwrap().password_env, "PGPASSWORD");
        assert_eq!(c.scheduler.max_concurrent, 1);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let text = MINIMAL.replace("0 2 * * *", "0 2 * *");
        let e = text.parse::<Config>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.to_string().starts_with("line 10: jobs.nightly.cron: "),
            "{e}"
        );
        let text = MINIMAL.replace("cron =", "corn =");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("line 10") && e.contains("corn"), "{e}");
    }

    #[test]
    fn a_password_in_the_database_url_is_refused() {
        let text = MINIMAL.replace("app@", "app:hunter2@");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.contains("database.url") && e.contains("PGPASSWORD"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "no secrets in messages: {e}");
    }

    #[test]
    fn a_bucket_prefix_job_keeps_its_url_and_needs_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dr.toml");
        let job = "[jobs.qr]\nkind = \"backup\"\ndir = \"s3://qr-images/prod/\"\n";
        std::fs::write(&path, format!("{MINIMAL}\n{job}dedup = true\n")).unwrap();
        let c = Config::from_path(&path).unwrap();
        assert_eq!(
            c.job("qr").unwrap().dir.as_deref(),
            Some(Path::new("s3://qr-images/prod/")),
            "a URL is not made relative to the file's directory"
        );
        let e = format!("{MINIMAL}\n{job}")
            .parse::<Config>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("dedup = true"), "{e}");
    }

    #[test]
    fn dedup_applies_to_directory_backups_only() {
        let ok = format!(
            "{MINIMAL}\n[jobs.uploads]\nkind = \"backup\"\ndir = \"/srv/u\"\ndedup = true\n"
        );
        let c: Config = ok.parse().unwrap();
        assert!(c.jobs.iter().any(|j| j.name == "uploads" && j.dedup));
        let bad = format!("{MINIMAL}\n[jobs.db]\nkind = \"backup\"\ndedup = true\n");
        let e = bad.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("dedup") && e.contains("dir"), "{e}");
    }

    #[test]
    fn backup_jobs_carry_the_retention_of_their_series() {
        let text = format!(
            "{MINIMAL}\n[retention]\nkeep_daily = 7\n\n[jobs.uploads]\nkind = \"backup\"\ndir = \"/srv/uploads\"\nretention = {{ keep_last = 3 }}\n\n[jobs.prune]\nkind = \"prune\"\n"
        );
        let c: Config = text.parse().unwrap();
        let policies = c.retention_policies().unwrap();
        assert_eq!(policies.default.keep_daily, Some(7));
        let uploads: dr_core::Series =
            format!("files:{}:/srv/uploads", dr_core::names::host_name())
                .parse()
                .unwrap();
        assert_eq!(policies.policy_for(&uploads).keep_last, Some(3));
        let db: dr_core::Series = "postgres:7301:app".parse().unwrap();
        assert_eq!(policies.policy_for(&db).keep_daily, Some(7));
    }

    #[test]
    fn one_source_has_one_retention() {
        let text = format!(
            "{MINIMAL}retention = {{ keep_last = 3 }}\n\n[jobs.hourly]\nkind = \"backup\"\ncron = \"0 * * * *\"\nretention = {{ keep_last = 4 }}\n"
        );
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("same source with another retention"), "{e}");
        let text =
            format!("{MINIMAL}\n[jobs.prune]\nkind = \"prune\"\nretention = {{ keep_last = 4 }}\n");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.contains("jobs.prune.retention") && e.contains("only backup jobs"),
            "{e}"
        );
    }

    #[test]
    fn backup_jobs_take_the_settings_of_drctl_backup() {
        let text = MINIMAL.replace(
            "cron = \"0 2 * * *\"",
            "cron = \"0 2 * * *\"\ncompression = \"gzip:1\"\nstorage_class = \"STANDARD_IA\"\nlabels = [\"nightly\"]",
        );
        let c: Config = text.parse().unwrap();
        let job = c.job("nightly").unwrap();
        assert_eq!(job.compression, Some(Codec::Gzip { level: 1 }));
        assert_eq!(job.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(job.labels, ["nightly"]);
        // Without them, the repository's defaults apply, and one stream.
        let c: Config = MINIMAL.parse().unwrap();
        assert_eq!(c.jobs[0].compression, None);
        assert_eq!(c.jobs[0].storage_class, None);
        assert_eq!(c.jobs[0].jobs, 1);
    }

    #[test]
    fn backup_jobs_take_jobs_like_drctl_backup() {
        let text = MINIMAL.replace("cron =", "jobs = 4\ncron =");
        let c: Config = text.parse().unwrap();
        assert_eq!(c.job("nightly").unwrap().jobs, 4);
        let text = MINIMAL.replace("cron =", "jobs = 0\ncron =");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.starts_with("line 10: jobs.nightly.jobs: "), "{e}");
        let text = format!(
            "{MINIMAL}\n[retention]\nkeep_last = 3\n\n[jobs.prune]\nkind = \"prune\"\njobs = 2\n"
        );
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("jobs.prune.jobs: "), "{e}");
    }

    #[test]
    fn backup_settings_are_checked_and_belong_to_backup_jobs() {
        let text = MINIMAL.replace("cron =", "compression = \"zstd:99\"\ncron =");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.starts_with("line 10: jobs.nightly.compression: ") && e.contains("zstd:99"),
            "{e}"
        );
        let text = format!(
            "{MINIMAL}\n[retention]\nkeep_last = 3\n\n[jobs.prune]\nkind = \"prune\"\ncompression = \"zstd\"\n"
        );
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.contains("jobs.prune.compression") && e.contains("only backup jobs"),
            "{e}"
        );
        let text = format!("{MINIMAL}\n[jobs.prune]\nkind = \"verify\"\nstorage_class = \"GLACIER\"\n[key]\nfile = \"k\"\n");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("jobs.prune.storage_class"), "{e}");
    }

    #[test]
    fn physical_jobs_and_the_pitr_window() {
        let text = format!(
            "{MINIMAL}\n[retention]\nkeep_daily = 7\nkeep_pitr = \"7d\"\n\n[jobs.base]\nkind = \"backup\"\nphysical = true\nretention = {{ keep_daily = 14, keep_pitr = \"3d\" }}\n\n[jobs.prune]\nkind = \"prune\"\n\n[jobs.drill]\nkind = \"drill\"\nphysical = true\n\n[key]\nfile = \"/etc/dr/repo.key\"\n"
        );
        let c: Config = text
            .parse()
            .unwrap_or_else(|e: Error| panic!("{}", e.report()));
        assert!(c.job("base").unwrap().physical);
        assert!(!c.job("nightly").unwrap().physical);
        assert!(c.job("drill").unwrap().physical);
        let policies = c.retention_policies().unwrap();
        let physical: dr_core::Series = "postgres-physical:7301:cluster".parse().unwrap();
        let p = policies.policy_for(&physical);
        assert_eq!((p.keep_daily, p.keep_pitr.unwrap().days), (Some(14), 3));
        let db: dr_core::Series = "postgres:7301:app".parse().unwrap();
        assert_eq!(policies.policy_for(&db).keep_pitr.unwrap().days, 7);
        let command = c.restore_command().unwrap();
        assert!(
            command.contains("wal-fetch --repo 'memory://' --key-file '/etc/dr/repo.key' %f %p"),
            "{command}"
        );

        for (job, message) in [
            (
                "kind = \"backup\"\nphysical = true\ndir = \"/srv\"",
                "not a dir",
            ),
            (
                "kind = \"verify\"\nphysical = true",
                "only backup and drill jobs",
            ),
        ] {
            let text = format!("{MINIMAL}\n[jobs.other]\n{job}\n[key]\nfile = \"k\"\n");
            let e = text.parse::<Config>().unwrap_err().to_string();
            assert!(
                e.contains("jobs.other.physical") && e.contains(message),
                "{e}"
            );
        }
        let text = format!(
            "{MINIMAL}\n[jobs.drill]\nkind = \"drill\"\nphysical = true\n[key]\npassphrase_env = \"P\"\n"
        );
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("needs [key] file"), "{e}");

        // Copy mode: the data directory, relative to the file like `dir`.
        let text = format!(
            "{MINIMAL}\n[jobs.base]\nkind = \"backup\"\nphysical = true\npgdata = \"pg/data\"\n"
        );
        let c = parse(&text, Some(Path::new("/etc/dr"))).unwrap();
        assert_eq!(
            c.job("base").unwrap().pgdata.as_deref(),
            Some(Path::new("/etc/dr/pg/data"))
        );
        let text = format!("{MINIMAL}\n[jobs.base]\nkind = \"backup\"\npgdata = \"/pg\"\n");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.contains("jobs.base.pgdata") && e.contains("add physical = true"),
            "{e}"
        );
    }

    #[test]
    fn wal_receive_jobs_run_continuously_with_a_spool() {
        let text = format!(
            "{MINIMAL}\n[jobs.wal]\nkind = \"wal-receive\"\nspool = \"/var/lib/dr/wal-spool\"\nslot = \"dr_prod\"\ninterval = \"5s\"\n"
        );
        let c: Config = text
            .parse()
            .unwrap_or_else(|e: Error| panic!("{}", e.report()));
        let job = c.job("wal").unwrap();
        assert_eq!(job.kind, dr_core::schedule::JobKind::WalReceive);
        assert!(job.schedule.is_none());
        let receive = job.receive.as_ref().unwrap();
        assert_eq!(receive.spool, std::path::Path::new("/var/lib/dr/wal-spool"));
        assert_eq!(receive.slot.as_deref(), Some("dr_prod"));
        assert_eq!(receive.interval, Some(std::time::Duration::from_secs(5)));
        assert!(c.job("nightly").unwrap().receive.is_none());

        for (job, key, message) in [
            ("kind = \"wal-receive\"", "jobs.wal.spool", "needs a spool"),
            (
                "kind = \"wal-receive\"\nspool = \"s\"\ncron = \"* * * * *\"",
                "jobs.wal.cron",
                "runs continuously",
            ),
            (
                "kind = \"wal-receive\"\nspool = \"s\"\nthen = [\"nightly\"]",
                "jobs.wal.then",
                "no job follows it",
            ),
            (
                "kind = \"wal-receive\"\nspool = \"s\"\nslot = \"Bad-Slot\"",
                "jobs.wal.slot",
                "not a replication slot name",
            ),
            (
                "kind = \"wal-receive\"\nspool = \"s\"\ninterval = \"0s\"",
                "jobs.wal.interval",
                "at least 1s",
            ),
            (
                "kind = \"verify\"\nspool = \"s\"",
                "jobs.wal.spool",
                "belong to wal-receive",
            ),
        ] {
            let text = format!("{MINIMAL}\n[jobs.wal]\n{job}\n[key]\nfile = \"k\"\n");
            let e = text.parse::<Config>().unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(message), "{job}: {e}");
        }
        // Nothing can run it as a follower: it never ends.
        let text = format!(
            "{MINIMAL}then = [\"wal\"]\n\n[jobs.wal]\nkind = \"wal-receive\"\nspool = \"s\"\n"
        );
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.contains("jobs.nightly.then") && e.contains("continuously"),
            "{e}"
        );
        // It streams [database]'s WAL.
        let text = "[repository]\nurl = \"memory://\"\n\n[jobs.wal]\nkind = \"wal-receive\"\nspool = \"s\"\n";
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("needs a [database]"), "{e}");
    }
}
