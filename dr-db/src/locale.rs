//! A database's encoding and locale: recorded with every dump, and given to the database a
//! restore creates, so that a restore into a fresh database sorts, compares and stores text
//! as the source did (`CREATE DATABASE … TEMPLATE template0` alone would take the target
//! server's defaults, and a LATIN1 database restored into UTF8, or `en_US` into `C`, is a
//! different database).

use std::collections::BTreeMap;

use dr_core::{Error, ErrorKind, Result};
use tokio_postgres::Client;

use crate::conn::{db_error, quote_literal};

/// Keys of the locale in [`dr_core::SourceInfo::properties`].
const ENCODING: &str = "encoding";
const LC_COLLATE: &str = "lc_collate";
const LC_CTYPE: &str = "lc_ctype";
const PROVIDER: &str = "locale_provider";
const LOCALE: &str = "locale";

/// How a database compares and classifies text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseLocale {
    /// Server encoding, e.g. `UTF8`.
    pub encoding: String,
    /// `LC_COLLATE`, e.g. `en_US.UTF-8`.
    pub collate: String,
    /// `LC_CTYPE`.
    pub ctype: String,
    /// `libc`, `icu` (PostgreSQL 15+) or `builtin` (17+).
    pub provider: String,
    /// The ICU or builtin locale, when the provider is not libc.
    pub locale: Option<String>,
}

impl DatabaseLocale {
    /// The locale of database `name` on a server of version `server_num`, if it exists.
    pub(crate) async fn of(
        client: &Client,
        server_num: i32,
        name: &str,
    ) -> Result<Option<DatabaseLocale>> {
        // The provider appeared in 15; its locale column was renamed in 17.
        let provider = match server_num {
            n if n >= 170_000 => "datlocprovider::text, datlocale::text",
            n if n >= 150_000 => "datlocprovider::text, daticulocale::text",
            _ => "'c'::text, NULL::text",
        };
        let sql = format!(
            "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text, \
                    {provider} \
             FROM pg_database WHERE datname = $1"
        );
        let row = client
            .query_opt(&sql, &[&name])
            .await
            .map_err(|e| db_error("cannot read the database's encoding and locale", e))?;
        Ok(row.map(|r| DatabaseLocale {
            encoding: r.get(0),
            collate: r.get(1),
            ctype: r.get(2),
            provider: match r.get::<_, String>(3).as_str() {
                "i" => "icu".into(),
                "b" => "builtin".into(),
                _ => "libc".into(),
            },
            locale: r.get(4),
        }))
    }

    /// Record the locale in a dump's properties.
    pub(crate) fn record(&self, properties: &mut BTreeMap<String, String>) {
        properties.insert(ENCODING.into(), self.encoding.clone());
        properties.insert(LC_COLLATE.into(), self.collate.clone());
        properties.insert(LC_CTYPE.into(), self.ctype.clone());
        properties.insert(PROVIDER.into(), self.provider.clone());
        if let Some(locale) = &self.locale {
            properties.insert(LOCALE.into(), locale.clone());
        }
    }

    /// The locale recorded by [`DatabaseLocale::record`]; `None` for dumps made before dr
    /// recorded it.
    pub(crate) fn recorded(properties: &BTreeMap<String, String>) -> Option<DatabaseLocale> {
        Some(DatabaseLocale {
            encoding: properties.get(ENCODING)?.clone(),
            collate: properties.get(LC_COLLATE)?.clone(),
            ctype: properties.get(LC_CTYPE)?.clone(),
            provider: properties
                .get(PROVIDER)
                .cloned()
                .unwrap_or_else(|| "libc".into()),
            locale: properties.get(LOCALE).cloned(),
        })
    }

    /// The clauses of `CREATE DATABASE` that give a new database this locale on a server of
    /// version `server_num`.
    pub(crate) fn create_clauses(&self, server_num: i32) -> Result<String> {
        let mut sql = format!(
            " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(&self.encoding),
            quote_literal(&self.collate),
            quote_literal(&self.ctype),
        );
        let (keyword, since) = match self.provider.as_str() {
            "libc" => return Ok(sql),
            "icu" => ("ICU_LOCALE", 150_000),
            "builtin" => ("BUILTIN_LOCALE", 170_000),
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("unknown locale provider {other:?} in the backup"),
                ))
            }
        };
        if server_num < since {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the source database uses the {} locale provider, which this server \
                     (version {}) does not have; create the database yourself and restore \
                     into it",
                    self.provider,
                    server_num / 10_000
                ),
            ));
        }
        sql.push_str(&format!(" LOCALE_PROVIDER {}", self.provider));
        if let Some(locale) = &self.locale {
            sql.push_str(&format!(" {keyword} {}", quote_literal(locale)));
        }
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icu() -> DatabaseLocale {
        DatabaseLocale {
            encoding: "UTF8".into(),
            collate: "en_US.UTF-8".into(),
            ctype: "en_US.UTF-8".into(),
            provider: "icu".into(),
            locale: Some("en-US".into()),
        }
    }

    #[test]
    fn recorded_locale_round_trips() {
        let mut props = BTreeMap::new();
        icu().record(&mut props);
        assert_eq!(DatabaseLocale::recorded(&props), Some(icu()));
        assert_eq!(DatabaseLocale::recorded(&BTreeMap::new()), None);
    }

    #[test]
    fn create_clauses_per_provider_and_server() {
        assert_eq!(
            icu().create_clauses(150_004).unwrap(),
            " ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8' \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        );
        let e = icu().create_clauses(140_010).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("version 14"), "{e}");
        let libc = DatabaseLocale {
            provider: "libc".into(),
            locale: None,
            ..icu()
        };
        assert_eq!(
            libc.create_clauses(130_000).unwrap(),
            " ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8'"
        );
    }
}
