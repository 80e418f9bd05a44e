//! Connection parameters: a database URL completed from the libpq environment, the one way
//! drctl's `--db` and dr.toml's `[database]` become a [`Config`].

use dr_core::{Error, Result};
use tokio_postgres::Config;

/// The connection `url` names (`postgres://user@host:port/db`, or libpq's `key=value`
/// form), completed from the environment as `psql` would complete it: the password from the
/// variable `password_env` (normally `PGPASSWORD`; `~/.pgpass` is read by the libpq
/// programs), the user from `PGUSER` (else `USER`, else `postgres`), the host from `PGHOST`
/// (else `localhost`) and the port from `PGPORT`, each only where the URL has none.
///
/// A password in the URL is kept, with a warning: other users of the machine can read a
/// program's arguments. Errors never repeat the URL (it may hold that password).
pub fn config_from_url(url: &str, password_env: &str) -> Result<Config> {
    config_from(url, password_env, |name| std::env::var(name).ok())
}

/// [`config_from_url`] with the environment given as a function (testable without touching
/// the process environment).
fn config_from(
    url: &str,
    password_env: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config> {
    let mut config: Config = url.parse().map_err(|e| {
        Error::invalid("the database URL is malformed (expected postgres://user@host:port/db)")
            .with_source(e)
    })?;
    if config.get_password().is_some() {
        tracing::warn!("the database URL contains a password, which other users can read from the process list; use PGPASSWORD or ~/.pgpass");
    } else if let Some(p) = env(password_env) {
        config.password(p);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(user);
    }
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").and_then(|p| p.parse::<u16>().ok()) {
            config.port(port);
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::Host;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_environment_fills_what_the_url_leaves_out() {
        let vars = [
            ("DR_TEST_PW", "s3cret"),
            ("PGUSER", "app"),
            ("USER", "unix"),
            ("PGHOST", "db.internal"),
            ("PGPORT", "6432"),
        ];
        let c = config_from("postgres:///appdb", "DR_TEST_PW", env(&vars)).unwrap();
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_hosts(), &[Host::Tcp("db.internal".into())]);
        assert_eq!(c.get_ports(), &[6432]);
        assert_eq!(c.get_dbname(), Some("appdb"));
    }

    #[test]
    fn the_url_wins_over_the_environment() {
        let vars = [("PGPASSWORD", "from-env"), ("PGUSER", "envuser")];
        let c = config_from(
            "postgres://owner:inline@10.0.0.1:5433/x",
            "PGPASSWORD",
            env(&vars),
        )
        .unwrap();
        assert_eq!(c.get_password(), Some(&b"inline"[..]));
        assert_eq!(c.get_user(), Some("owner"));
        assert_eq!(c.get_hosts(), &[Host::Tcp("10.0.0.1".into())]);
        assert_eq!(c.get_ports(), &[5433]);
    }

    #[test]
    fn defaults_without_any_environment() {
        let c = config_from("postgres:///x", "PGPASSWORD", env(&[])).unwrap();
        assert_eq!(c.get_password(), None);
        assert_eq!(c.get_user(), Some("postgres"));
        assert_eq!(c.get_hosts(), &[Host::Tcp("localhost".into())]);
        assert!(c.get_ports().is_empty());
    }

    #[test]
    fn a_malformed_url_is_refused_without_repeating_it() {
        let e =
            config_from("postgres://u:hunter2@h:notaport/x", "PGPASSWORD", env(&[])).unwrap_err();
        assert_eq!(e.kind(), dr_core::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("malformed"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
