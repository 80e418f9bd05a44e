//! Connections of our own (tokio-postgres) and the environment handed to libpq programs.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use dr_core::{Error, ErrorKind, Result};
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

/// A client and the task that drives its connection. The connection's own error (the real
/// reason a query saw a closed connection) is logged by the task and returned by
/// [`Conn::close`].
pub(crate) struct Conn {
    /// The client half.
    pub client: Client,
    task: JoinHandle<std::result::Result<(), tokio_postgres::Error>>,
}

/// Connect with `config`, over TLS as its `sslmode` says (see [`crate::tls`]).
/// `what` names the purpose for messages ("snapshot", "maintenance", …).
pub(crate) async fn connect(config: &Config, what: &'static str) -> Result<Conn> {
    let (client, connection) = connect_undriven(config, what).await?;
    let task = tokio::spawn(async move {
        let r = connection.await;
        if let Err(e) = &r {
            tracing::warn!(connection = what, error = %e, "PostgreSQL connection failed");
        }
        r
    });
    Ok(Conn { client, task })
}

/// The connection half of a client, to be polled by its user.
pub(crate) type Connection = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>,
>;

/// Like [`connect`], but the connection is returned for the caller to poll on its own task
/// (see [`driven`]) instead of on a task of its own: a client that streams a lot (a COPY)
/// then does not wake another thread for every few kilobytes it receives.
pub(crate) async fn connect_undriven(
    config: &Config,
    what: &'static str,
) -> Result<(Client, Connection)> {
    let unix_host = config
        .get_hosts()
        .iter()
        .any(|h| matches!(h, Host::Unix(_)));
    let connected = if config.get_ssl_mode() == SslMode::Disable || unix_host {
        if unix_host && config.get_ssl_mode() == SslMode::Require {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "sslmode=require with a Unix-socket host: TLS is not used over Unix sockets; \
                 connect through TCP or use sslmode=prefer",
            )
            .with_context("connection", what));
        }
        config
            .connect(NoTls)
            .await
            .map(|(client, connection)| (client, Box::pin(connection) as Connection))
    } else {
        config
            .connect(crate::tls::connector()?)
            .await
            .map(|(client, connection)| (client, Box::pin(connection) as Connection))
    };
    connected.map_err(|e| {
        let mut err = Error::new(ErrorKind::Database, "cannot connect to PostgreSQL")
            .with_context("connection", what);
        if let Some(db) = config.get_dbname() {
            err = err.with_context("database", db);
        }
        let err = err.with_source(e);
        if is_transient_connect_error(&err) {
            err.temporary()
        } else {
            err
        }
    })
}

/// Run `f` while polling `connection` on the same task; an error if the connection ends
/// first.
pub(crate) async fn driven<T>(
    connection: &mut Connection,
    f: impl std::future::Future<Output = T>,
) -> Result<T> {
    use std::task::Poll;
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match connection.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Err(Error::new(
                ErrorKind::Database,
                "the PostgreSQL connection closed",
            ))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::new(
                ErrorKind::Database,
                "PostgreSQL connection failed",
            )
            .with_source(e))),
        }
    })
    .await
}

fn is_transient_connect_error(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .map(|e| e.as_db_error().is_none())
        .unwrap_or(false)
}

impl Conn {
    /// Close the connection and report the connection's own failure, if it had one.
    pub async fn close(self) -> Result<()> {
        drop(self.client);
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                Err(Error::new(ErrorKind::Database, "PostgreSQL connection failed").with_source(e))
            }
            Err(e) => Err(Error::new(ErrorKind::Other, "connection task failed").with_source(e)),
        }
    }
}

/// A [`ErrorKind::Database`] error for a failed statement; the server's message (with its
/// SQLSTATE) stays in `source()`.
pub(crate) fn db_error(
    what: impl Into<std::borrow::Cow<'static, str>>,
    e: tokio_postgres::Error,
) -> Error {
    let mut err = Error::new(ErrorKind::Database, what);
    if let Some(code) = e.code() {
        err = err.with_context("sqlstate", code.code());
    }
    err.with_source(e)
}

/// `"name"`, with embedded quotes doubled: an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled: an SQL string literal
/// (`standard_conforming_strings` is on in every supported server).
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// libpq variables that we always set or clear so that the child connects exactly where
/// `config` says, whatever the parent's environment holds. `PGPASSFILE`, `PGSSLROOTCERT`
/// and friends are left alone: they carry settings `Config` cannot express.
pub(crate) const LIBPQ_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGSSLMODE",
    "PGAPPNAME",
    "PGOPTIONS",
    "PGSERVICE",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
];

/// The environment that tells a libpq program (pg_dump, pg_restore) to connect as `config`
/// does, to database `dbname`. This is the only channel for connection parameters and
/// credentials: argv is visible to every user of the machine, the environment is not.
pub(crate) fn libpq_env(config: &Config, dbname: &str) -> Vec<(&'static str, OsString)> {
    let mut env: Vec<(&'static str, OsString)> = Vec::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        })
        .collect();
    if !hosts.is_empty() {
        env.push(("PGHOST", hosts.join(",").into()));
    }
    let addrs: Vec<String> = config
        .get_hostaddrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    if !addrs.is_empty() {
        env.push(("PGHOSTADDR", addrs.join(",").into()));
    }
    let ports: Vec<String> = config.get_ports().iter().map(|p| p.to_string()).collect();
    if !ports.is_empty() {
        env.push(("PGPORT", ports.join(",").into()));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.into()));
    }
    env.push(("PGDATABASE", dbname.into()));
    if let Some(password) = config.get_password() {
        env.push((
            "PGPASSWORD",
            std::ffi::OsStr::from_bytes(password).to_os_string(),
        ));
    }
    let sslmode = match config.get_ssl_mode() {
        SslMode::Disable => "disable",
        SslMode::Require => "require",
        _ => "prefer",
    };
    env.push(("PGSSLMODE", sslmode.into()));
    env.push((
        "PGAPPNAME",
        config.get_application_name().unwrap_or("dr").into(),
    ));
    if let Some(options) = config.get_options() {
        env.push(("PGOPTIONS", options.into()));
    }
    if let Some(timeout) = config.get_connect_timeout() {
        env.push((
            "PGCONNECT_TIMEOUT",
            timeout.as_secs().max(2).to_string().into(),
        ));
    }
    env
}

/// Clear the parent's libpq variables from `cmd` and set those of `config`.
pub(crate) fn apply_libpq_env(cmd: &mut std::process::Command, config: &Config, dbname: &str) {
    for var in LIBPQ_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in libpq_env(config, dbname) {
        cmd.env(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn env_carries_every_parameter() {
        let mut config: Config = "host=db1,/run/pg port=5433,5434 user=u dbname=x"
            .parse()
            .unwrap();
        config.password(b"s3cr\xffet".as_slice());
        let env = libpq_env(&config, "x");
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PGHOST").unwrap(), "db1,/run/pg");
        assert_eq!(get("PGPORT").unwrap(), "5433,5434");
        assert_eq!(get("PGUSER").unwrap(), "u");
        assert_eq!(get("PGDATABASE").unwrap(), "x");
        assert_eq!(get("PGPASSWORD").unwrap().as_bytes(), b"s3cr\xffet");
        assert_eq!(get("PGAPPNAME").unwrap(), "dr");
    }
}
