//! `[checks]` in dr.toml: the integrity checks every drill runs on the restored database,
//! beyond row counts and foreign keys (see [`dr_db::checks::run_checks`]).
//!
//! ```toml
//! [checks]
//! amcheck = true                          # B-tree and heap checks (needs a superuser)
//! sequences = true                        # no sequence behind the column it feeds
//!
//! [[checks.sql]]                          # a query that must return no rows
//! name = "no_negative_balances"
//! sql = "SELECT id FROM accounts WHERE balance < 0"
//! ```

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use dr_core::{Error, Result};
use dr_db::checks::{IntegrityChecks, SqlCheck};

/// `[checks]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChecks {
    #[serde(default)]
    amcheck: Option<bool>,
    #[serde(default)]
    sequences: Option<bool>,
    #[serde(default)]
    sql: Vec<RawSqlCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlCheck {
    name: Spanned<String>,
    sql: Spanned<String>,
}

impl RawChecks {
    /// The checks, validated: every user check has a unique, non-empty name and a query.
    /// `at` turns a span into "line N: key: message".
    pub(crate) fn resolve(
        self,
        at: impl Fn(std::ops::Range<usize>, &str, Error) -> Error,
    ) -> Result<IntegrityChecks> {
        let defaults = IntegrityChecks::default();
        let mut names = BTreeSet::new();
        let mut sql = Vec::new();
        for (i, check) in self.sql.into_iter().enumerate() {
            let name = check.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(at(
                    check.name.span(),
                    &format!("checks.sql[{i}].name"),
                    Error::invalid("must not be empty"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(at(
                    check.name.span(),
                    &format!("checks.sql[{i}].name"),
                    Error::invalid(format!("'{name}' names two checks")),
                ));
            }
            if check
                .sql
                .get_ref()
                .trim()
                .trim_end_matches(';')
                .trim()
                .is_empty()
            {
                return Err(at(
                    check.sql.span(),
                    &format!("checks.sql[{i}].sql"),
                    Error::invalid("must be a query that returns the rows that are wrong"),
                ));
            }
            sql.push(SqlCheck {
                name,
                sql: check.sql.into_inner(),
            });
        }
        Ok(IntegrityChecks {
            amcheck: self.amcheck.unwrap_or(defaults.amcheck),
            sequences: self.sequences.unwrap_or(defaults.sequences),
            sql,
        })
    }
}
