//! `dr.toml` as written: the serde shape of the file, before validation, and the source
//! text that turns a value's span into "line N: key: message".

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use dr_core::schedule::Tz;
use dr_core::{Error, Result, RetentionPolicy};

// ----- the file as written ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) repository: RawRepository,
    #[serde(default)]
    pub(super) database: Option<RawDatabase>,
    #[serde(default)]
    pub(super) key: Option<RawKey>,
    #[serde(default)]
    pub(super) labels: Vec<String>,
    #[serde(default)]
    pub(super) objectives: RawObjectives,
    #[serde(default)]
    pub(super) checks: crate::checks::RawChecks,
    #[serde(default)]
    pub(super) retention: Option<RetentionPolicy>,
    #[serde(default)]
    pub(super) scheduler: RawScheduler,
    #[serde(default)]
    pub(super) windows: BTreeMap<String, RawWindow>,
    #[serde(default)]
    pub(super) jobs: BTreeMap<String, RawJob>,
    #[serde(default)]
    pub(super) monitoring: crate::monitoring::MonitoringConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    pub(super) url: Spanned<String>,
    #[serde(default)]
    pub(super) options: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) url: Spanned<String>,
    #[serde(default)]
    pub(super) password_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    #[serde(default)]
    pub(super) file: Option<PathBuf>,
    #[serde(default)]
    pub(super) passphrase_env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObjectives {
    #[serde(default)]
    pub(super) rpo: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rto: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScheduler {
    #[serde(default)]
    pub(super) max_concurrent: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) start: Spanned<String>,
    pub(super) length: Spanned<String>,
    #[serde(default)]
    pub(super) time_zone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) kind: Spanned<String>,
    #[serde(default)]
    pub(super) cron: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) time_zone: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) jitter: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) only_in: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) not_in: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) missed: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) labels: Vec<String>,
    #[serde(default)]
    pub(super) then: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) all: bool,
    #[serde(default)]
    pub(super) dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) dedup: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) to: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) to_options: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) storage_class: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) compression: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) verify: bool,
    #[serde(default)]
    pub(super) physical: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) pgdata: Option<Spanned<std::path::PathBuf>>,
    #[serde(default)]
    pub(super) retention: Option<Spanned<RetentionPolicy>>,
    #[serde(default)]
    pub(super) jobs: Option<Spanned<i64>>,
}

/// Turns spans into "line N: key: message" errors.
pub(super) struct Src<'a>(pub(super) &'a str);

impl Src<'_> {
    pub(super) fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0[..end].matches('\n').count() + 1
    }

    pub(super) fn err(&self, span: Range<usize>, key: &str, e: Error) -> Error {
        Error::new(
            e.kind(),
            format!("line {}: {key}: {}", self.line(span), e.message()),
        )
        .with_source(e)
    }

    pub(super) fn check<T, U>(
        &self,
        value: &Spanned<T>,
        key: &str,
        f: impl FnOnce(&T) -> Result<U>,
    ) -> Result<U> {
        f(value.get_ref()).map_err(|e| self.err(value.span(), key, e))
    }
}

pub(super) fn time_zone(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::invalid(format!(
            "'{name}' is not a known time zone (use an IANA name such as UTC or Europe/Berlin)"
        ))
    })
}
