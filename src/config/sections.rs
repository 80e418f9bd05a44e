//! Validation of `dr.toml`, one function per top-level table; `[jobs.*]`, the largest, has
//! its own file ([`super::job_section`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use dr_core::schedule::{parse_duration, CronExpr, Tz, Window};
use dr_core::{Error, Result};

use super::raw::{
    time_zone, RawConfig, RawDatabase, RawKey, RawObjectives, RawRepository, RawScheduler,
    RawWindow, Src,
};
use super::types::{Config, DatabaseConfig, KeyConfig, RepositoryConfig, SchedulerConfig};
use crate::drill::Objectives;

/// Parse and validate a whole file; relative paths in it are relative to `base`.
pub(super) fn parse(text: &str, base: Option<&Path>) -> Result<Config> {
    let src = Src(text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        let at = e
            .span()
            .map(|s| format!("line {}: ", src.line(s)))
            .unwrap_or_default();
        Error::invalid(format!("{at}{msg}"))
    })?;

    let repository = repository(&src, raw.repository)?;
    let database = raw.database.map(|db| database(&src, db)).transpose()?;
    let key = key(raw.key, base)?;
    let objectives = objectives(&src, &raw.objectives)?;
    let checks = raw.checks.resolve(|span, key, e| src.err(span, key, e))?;
    let scheduler = scheduler(&src, &raw.scheduler)?;
    let windows = windows(&src, &raw.windows)?;
    let retention = raw.retention.unwrap_or_default();
    let jobs = super::job_section::jobs(
        &src,
        &raw.jobs,
        &super::job_section::Context {
            has_database: database.is_some(),
            has_key: key != KeyConfig::None,
            key_is_file: matches!(key, KeyConfig::File(_)),
            retention: &retention,
            windows: &windows,
            base,
        },
    )?;

    Ok(Config {
        repository,
        database,
        key,
        labels: raw.labels,
        objectives,
        checks,
        retention,
        scheduler,
        windows,
        jobs,
        monitoring: {
            raw.monitoring.validate()?;
            raw.monitoring
        },
    })
}

/// A `Spanned` duration, or `None`, as "line N: key: …" errors.
fn duration(src: &Src, v: &Option<Spanned<String>>, key: &str) -> Result<Option<Duration>> {
    v.as_ref()
        .map(|s| src.check(s, key, |t| parse_duration(t)))
        .transpose()
}

/// `[repository]`.
fn repository(src: &Src, raw: RawRepository) -> Result<RepositoryConfig> {
    let url = src.check(&raw.url, "repository.url", |u| {
        if u.trim().is_empty() {
            return Err(Error::invalid("must not be empty"));
        }
        Ok(u.trim().to_string())
    })?;
    Ok(RepositoryConfig {
        url,
        options: raw.options,
    })
}

/// `[database]`: a URL without a password.
fn database(src: &Src, raw: RawDatabase) -> Result<DatabaseConfig> {
    let url = src.check(&raw.url, "database.url", |u| {
        let parsed: tokio_postgres::Config = u.parse().map_err(|e| {
            Error::invalid("malformed (expected postgres://user@host:port/db)").with_source(e)
        })?;
        if parsed.get_password().is_some() {
            return Err(Error::invalid(
                "contains a password: remove it and put it in the environment variable named by database.password_env (default PGPASSWORD), or in ~/.pgpass",
            ));
        }
        Ok(u.clone())
    })?;
    Ok(DatabaseConfig {
        url,
        password_env: raw.password_env.unwrap_or_else(|| "PGPASSWORD".into()),
    })
}

/// `[key]`: a file (relative to `base`) or a passphrase variable, not both.
fn key(raw: Option<RawKey>, base: Option<&Path>) -> Result<KeyConfig> {
    Ok(match raw {
        None => KeyConfig::None,
        Some(RawKey {
            file: Some(_),
            passphrase_env: Some(_),
        }) => {
            return Err(Error::invalid(
                "key: give either file or passphrase_env, not both",
            ))
        }
        Some(RawKey {
            file: Some(f),
            passphrase_env: None,
        }) => KeyConfig::File(match base {
            Some(dir) if f.is_relative() => dir.join(f),
            _ => f,
        }),
        Some(RawKey {
            file: None,
            passphrase_env: Some(v),
        }) => KeyConfig::PassphraseEnv(v),
        Some(RawKey {
            file: None,
            passphrase_env: None,
        }) => return Err(Error::invalid("key: give file or passphrase_env")),
    })
}

/// `[objectives]`.
fn objectives(src: &Src, raw: &RawObjectives) -> Result<Objectives> {
    Ok(Objectives {
        rpo: duration(src, &raw.rpo, "objectives.rpo")?,
        rto: duration(src, &raw.rto, "objectives.rto")?,
    })
}

/// `[scheduler]`.
fn scheduler(src: &Src, raw: &RawScheduler) -> Result<SchedulerConfig> {
    let mut scheduler = SchedulerConfig::default();
    if let Some(n) = &raw.max_concurrent {
        scheduler.max_concurrent = src.check(n, "scheduler.max_concurrent", |n| {
            if (1..=64).contains(n) {
                Ok(*n as usize)
            } else {
                Err(Error::invalid("must be between 1 and 64"))
            }
        })?;
    }
    if let Some(g) = duration(src, &raw.shutdown_grace, "scheduler.shutdown_grace")? {
        scheduler.shutdown_grace = g;
    }
    Ok(scheduler)
}

/// `[windows.*]`.
fn windows(src: &Src, raw: &BTreeMap<String, RawWindow>) -> Result<BTreeMap<String, Window>> {
    let mut windows = BTreeMap::new();
    for (name, w) in raw {
        let key = |field: &str| format!("windows.{name}.{field}");
        let tz = match &w.time_zone {
            Some(t) => src.check(t, &key("time_zone"), |t| time_zone(t))?,
            None => Tz::UTC,
        };
        let start = src.check(&w.start, &key("start"), |s| CronExpr::new(s, tz))?;
        let length = src.check(&w.length, &key("length"), |l| parse_duration(l))?;
        let window = src.check(&w.length, &key("length"), |_| Window::new(start, length))?;
        windows.insert(name.clone(), window);
    }
    Ok(windows)
}
