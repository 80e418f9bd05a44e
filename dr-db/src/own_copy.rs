//! Table data that dr reads itself in a dump taken as pieces: `COPY … TO STDOUT` on
//! connections of our own inside the exported snapshot, streamed straight into the backup's
//! pieces, instead of `pg_dump -Fd` writing it into the spool and dr reading it back.
//!
//! Why: on a machine whose cores the server's backends already keep busy, pg_dump writing
//! its files into the spool (page cache, ext4) and dr reading and deleting them again cost
//! about as much CPU as pg_dump's whole dump (BENCHMARKS.md, issue 15).
//!
//! How it stays a dump pg_restore reads as pg_dump's own:
//!
//! * dr takes the plain tables whose data pg_dump would dump as a `TABLE DATA` entry of
//!   their own ([`choose_tables`]: permanent tables outside the system schemas, not members
//!   of an extension, not partitions of a hash-partitioned table, whose data pg_dump may
//!   load through the root); pg_dump dumps everything else (schema, sequences, large
//!   objects, unlogged and extension tables) with `--exclude-table-data` for each of them.
//! * The snapshot connection locks them (`ACCESS SHARE`) before pg_dump starts, as pg_dump
//!   locks what it dumps, without waiting: if one is locked in a conflicting mode, dr reads
//!   no table data itself and pg_dump dumps it all, waiting for its locks as it always has.
//!   Each COPY connection takes the lock again with `NOWAIT`, as pg_dump's parallel workers
//!   do, so that a concurrent `ALTER TABLE` waiting for the first lock fails the backup
//!   instead of deadlocking it.
//! * The sessions are set up as pg_dump sets up its own (`setup_connection`): `DateStyle`
//!   ISO, `IntervalStyle` postgres, `extra_float_digits` 3, no synchronized scans, no
//!   timeouts, `row_security` off, an empty `search_path`, the snapshot imported in a
//!   `REPEATABLE READ, READ ONLY` transaction, so the COPY text is byte for byte pg_dump's.
//!   dr's connections speak UTF-8, so dr reads table data itself only from UTF-8 databases.
//! * Each table's data file is its COPY text and pg_dump's end-of-data marker `\.` with two
//!   empty lines, named `<dump id>.dat`, and `toc.dat` gets the `TABLE DATA` entry
//!   `dumpTableData` (`pg_dump.c`) would have written ([`table_data_entry`]), placed where
//!   pg_dump's sort puts it ([`crate::toc_file::TocFile::insert_table_data`]).

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use dr_core::{ByteStream, Error, ErrorKind, Result};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config};

use crate::conn::{connect_undriven, db_error, driven, quote_ident, quote_literal, Connection};
use crate::directory::PieceCounter;
use crate::toc_file::{TocFile, TocFileEntry, SECTION_DATA};

/// The most tables dr reads itself in one dump (the largest ones): each is one
/// `--exclude-table-data` argument of pg_dump and one pattern query pg_dump runs.
pub(crate) const MAX_OWN_TABLES: i64 = 256;

/// Size of the chunks an own table's piece yields.
const CHUNK_BYTES: usize = 1 << 20;

/// pg_dump's end-of-data marker after a table's rows (`dumpTableData_copy`).
const END_OF_DATA: &[u8] = b"\\.\n\n\n";

/// A table whose data dr reads itself.
#[derive(Debug, Clone)]
pub(crate) struct OwnTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `schema.name`, quoted by the server as pg_dump's `fmtQualifiedId` quotes.
    pub qualified: String,
    /// The dumped columns (not dropped, not generated), in `attnum` order, quoted likewise.
    pub columns: Vec<String>,
}

impl OwnTable {
    /// pg_dump's column list (`fmtCopyColumnList`): `(a, b)`, or nothing without columns.
    fn column_list(&self) -> String {
        if self.columns.is_empty() {
            String::new()
        } else {
            format!("({})", self.columns.join(", "))
        }
    }

    /// The `pg_dump` pattern that names exactly this table (`--exclude-table-data`): both
    /// parts in double quotes, where no pattern character is special.
    pub fn pattern(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Whether dr may read table data itself from a server at `server_version_num` dumped by
/// pg_dump `pg_dump_major`: the versions whose `TABLE DATA` entries this module writes
/// (pg_dump 12 to 17; 18 adds statistics entries to the data section).
pub(crate) fn supported(server_version_num: i32, pg_dump_major: u32) -> bool {
    server_version_num >= 120000 && (12..=17).contains(&pg_dump_major)
}

/// The client encoding pg_dump would use is not UTF-8 when `PGCLIENTENCODING` says so.
fn client_encoding_is_utf8() -> bool {
    match std::env::var("PGCLIENTENCODING") {
        Ok(e) => {
            let cleaned: String = e
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase();
            cleaned == "utf8"
        }
        Err(_) => true,
    }
}

/// The tables dr reads itself, largest first (by pages, table and TOAST, as pg_dump orders
/// its parallel jobs: no size function, which would wait for a table's lock), chosen in the
/// snapshot transaction on `client`; none when the database is not UTF-8.
pub(crate) async fn choose_tables(client: &Client) -> Result<Vec<OwnTable>> {
    if !client_encoding_is_utf8() {
        return Ok(Vec::new());
    }
    // The server quotes identifiers as pg_dump does unless told to quote them all.
    client
        .batch_execute("SET LOCAL quote_all_identifiers = off")
        .await
        .map_err(|e| db_error("cannot list the tables to dump", e))?;
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, \
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    ARRAY(SELECT quote_ident(a.attname) FROM pg_attribute a \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 \
                            AND NOT a.attisdropped AND a.attgenerated = '' \
                          ORDER BY a.attnum) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
             WHERE current_setting('server_encoding') = 'UTF8' \
               AND c.relkind = 'r' AND c.relpersistence = 'p' \
               AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
               AND has_table_privilege(c.oid, 'SELECT') \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d \
                               WHERE d.classid = 'pg_class'::regclass \
                                 AND d.objid = c.oid AND d.deptype = 'e') \
               AND NOT (c.relispartition AND EXISTS ( \
                   SELECT 1 FROM pg_partition_ancestors(c.oid) a \
                   JOIN pg_partitioned_table p ON p.partrelid = a.relid \
                   WHERE p.partstrat = 'h')) \
             ORDER BY c.relpages::int8 + coalesce(t.relpages, 0) DESC, c.oid \
             LIMIT $1",
            &[&MAX_OWN_TABLES],
        )
        .await
        .map_err(|e| db_error("cannot list the tables to dump", e))?;
    client
        .batch_execute("RESET quote_all_identifiers")
        .await
        .map_err(|e| db_error("cannot list the tables to dump", e))?;
    Ok(rows
        .iter()
        .map(|r| OwnTable {
            oid: r.get(0),
            schema: r.get(1),
            name: r.get(2),
            qualified: r.get(3),
            columns: r.get(4),
        })
        .collect())
}

/// Lock `tables` in the snapshot transaction on `client` without waiting, as pg_dump locks
/// what it dumps; `false`, with nothing locked, when one of them is locked in a conflicting
/// mode: pg_dump then dumps all table data, waiting for its own locks as it always has.
pub(crate) async fn try_lock_tables(client: &Client, tables: &[OwnTable]) -> Result<bool> {
    if tables.is_empty() {
        return Ok(false);
    }
    let failed = |e| db_error("cannot lock the tables to dump", e);
    let list: Vec<&str> = tables.iter().map(|t| t.qualified.as_str()).collect();
    // In a savepoint: a failed statement must not end the transaction whose snapshot the
    // dump reads.
    client
        .batch_execute("SAVEPOINT dr_lock")
        .await
        .map_err(failed)?;
    let locked = client
        .batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT",
            list.join(", ")
        ))
        .await;
    match locked {
        Ok(()) => {
            client
                .batch_execute("RELEASE SAVEPOINT dr_lock")
                .await
                .map_err(failed)?;
            Ok(true)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            tracing::info!(
                "a table is locked: pg_dump dumps every table's data, waiting for its locks"
            );
            client
                .batch_execute("ROLLBACK TO SAVEPOINT dr_lock")
                .await
                .map_err(failed)?;
            Ok(false)
        }
        Err(e) => Err(failed(e)),
    }
}

/// A connection polled by the task that uses it ([`driven`]): a COPY's rows arrive a few
/// kilobytes at a time, and a connection on a task of its own woke the reading task on
/// another thread for each of them (a quarter of the backup's CPU time in context switches).
struct CopyConn {
    client: Client,
    connection: Connection,
}

impl CopyConn {
    async fn execute(
        &mut self,
        sql: &str,
    ) -> Result<std::result::Result<(), tokio_postgres::Error>> {
        driven(&mut self.connection, self.client.batch_execute(sql)).await
    }

    /// End its transaction and close it.
    async fn close(mut self) -> Result<()> {
        self.execute("COMMIT")
            .await?
            .map_err(|e| db_error("cannot end a COPY connection's transaction", e))?;
        drop(self.client);
        self.connection.await.map_err(|e| {
            Error::new(ErrorKind::Database, "PostgreSQL connection failed").with_source(e)
        })
    }
}

/// Connections in the snapshot, shared by the tables' pieces: a piece takes one while it
/// reads its table and gives it back at the end.
pub(crate) struct CopyPool {
    conns: Mutex<Vec<CopyConn>>,
    available: Arc<Semaphore>,
}

impl CopyPool {
    /// `n` connections with `config`, each in a transaction that imported `snapshot_id`.
    pub(crate) async fn open(config: &Config, snapshot_id: &str, n: usize) -> Result<CopyPool> {
        let opened = futures::future::join_all(
            (0..n.max(1)).map(|_| open_copy_connection(config, snapshot_id)),
        )
        .await;
        let mut conns = Vec::new();
        let mut failure = None;
        for c in opened {
            match c {
                Ok(c) => conns.push(c),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let n = conns.len();
        Ok(CopyPool {
            conns: Mutex::new(conns),
            available: Arc::new(Semaphore::new(n)),
        })
    }

    /// End every connection's transaction and close it; an error if one failed (its
    /// snapshot may not have held).
    pub(crate) async fn close(&self) -> Result<()> {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        self.available.close();
        let mut result = Ok(());
        for c in conns {
            let closed = c.close().await;
            if result.is_ok() {
                result = closed;
            }
        }
        result
    }
}

async fn open_copy_connection(config: &Config, snapshot_id: &str) -> Result<CopyConn> {
    let (client, connection) = connect_undriven(config, "table data").await?;
    let mut conn = CopyConn { client, connection };
    let timezone = match std::env::var("PGTZ") {
        Ok(tz) => format!("SET TimeZone = {};", quote_literal(&tz)),
        Err(_) => String::new(),
    };
    // Two batches: settings in the same simple query as BEGIN would start the transaction
    // before it, and the snapshot must be its first statement.
    let setup = format!(
        "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits TO 3; \
         SET synchronize_seqscans TO off; SET statement_timeout = 0; SET lock_timeout = 0; \
         SET idle_in_transaction_session_timeout = 0; SET row_security = off; {timezone} \
         SELECT pg_catalog.set_config('search_path', '', false);"
    );
    let begin = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {};",
        quote_literal(snapshot_id)
    );
    for sql in [setup, begin] {
        conn.execute(&sql)
            .await?
            .map_err(|e| db_error("cannot import the dump's snapshot on a COPY connection", e))?;
    }
    Ok(conn)
}

/// The `TABLE DATA` entry pg_dump's `dumpTableData` writes for `table`, whose `TABLE`
/// entry in `toc` is `of`, as dump id `dump_id`.
pub(crate) fn table_data_entry(
    toc: &TocFile,
    of: &TocFileEntry,
    table: &OwnTable,
    dump_id: i64,
) -> TocFileEntry {
    // The table's name as pg_dump quoted it, from its DROP statement when it has the
    // usual form (`fmtQualifiedDumpable`); the server's quoting otherwise.
    let qualified = of
        .drop_stmt
        .as_deref()
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.strip_prefix("DROP TABLE "))
        .and_then(|d| d.strip_suffix(";\n"))
        .filter(|d| !d.is_empty() && !d.contains('\n'))
        .unwrap_or(&table.qualified);
    let copy_stmt = format!("COPY {qualified} {} FROM stdin;\n", table.column_list());
    TocFileEntry {
        dump_id,
        had_dumper: 1,
        table_oid: Some(b"0".to_vec()),
        oid: Some(table.oid.to_string().into_bytes()),
        tag: of.tag.clone(),
        desc: Some(b"TABLE DATA".to_vec()),
        section: SECTION_DATA,
        defn: None,
        drop_stmt: None,
        copy_stmt: Some(copy_stmt.into_bytes()),
        namespace: of.namespace.clone(),
        tablespace: None,
        table_am: (toc.minor_version() >= 14).then_some(None),
        relkind: (toc.minor_version() >= 16).then_some(0),
        owner: of.owner.clone(),
        with_oids: Some(b"false".to_vec()),
        dependencies: vec![of.dump_id.to_string().into_bytes()],
        file: Some(format!("{dump_id}.dat").into_bytes()),
    }
}

/// A table dr reads itself and the name of its data file.
pub(crate) type NamedTable = (OwnTable, String);

/// pg_dump's `toc.dat` with a `TABLE DATA` entry for each of `tables`: the new `toc.dat`,
/// and each table with its data file's name, in the order of `tables`.
pub(crate) fn add_table_data(
    toc_dat: &[u8],
    tables: &[OwnTable],
) -> Result<(Vec<u8>, Vec<NamedTable>)> {
    let mut toc = TocFile::parse(toc_dat)?;
    // The data is read over UTF-8 connections: pg_dump's must have been UTF-8 too.
    let encoding = toc.entries.iter().find(|e| e.desc() == "ENCODING");
    let utf8 = encoding
        .and_then(|e| e.defn.as_deref())
        .is_some_and(|d| d == b"SET client_encoding = 'UTF8';\n");
    if !tables.is_empty() && !utf8 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "pg_dump dumped in an encoding other than UTF-8, in which dr does not read table data",
        ));
    }
    let mut next_id = toc.max_dump_id();
    let mut named = Vec::with_capacity(tables.len());
    for table in tables {
        let of = toc
            .entries
            .iter()
            .find(|e| e.desc() == "TABLE" && e.oid() == Some(table.oid))
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Other,
                    format!(
                        "pg_dump's toc.dat has no TABLE entry for {}, whose data dr read",
                        table.qualified
                    ),
                )
            })?;
        if of.namespace() != table.schema || of.tag() != table.name {
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "pg_dump's toc.dat names table {} {}.{}",
                    table.oid,
                    of.namespace(),
                    of.tag()
                ),
            ));
        }
        next_id += 1;
        let entry = table_data_entry(&toc, &of, table, next_id);
        named.push((table.clone(), format!("{next_id}.dat")));
        toc.insert_table_data(entry);
    }
    Ok((toc.to_bytes(), named))
}

/// What a piece calls with its counter once its table has been read to the end.
pub(crate) type Done = Box<dyn FnOnce(PieceCounter) -> Result<()> + Send>;

/// The data file of `table`: its `COPY … TO STDOUT` text on a connection of `pool` (taken
/// when the piece is first read), then pg_dump's end-of-data marker; counted by `counter`,
/// which goes to `done` at the end.
pub(crate) fn table_stream(
    pool: Arc<CopyPool>,
    table: OwnTable,
    counter: PieceCounter,
    done: Done,
) -> ByteStream {
    let read = TableRead {
        pool,
        table,
        held: None,
        copy: None,
        counter: Some(counter),
        done: Some(done),
        ended: false,
        finished: false,
    };
    futures::stream::unfold(read, |mut r| async move {
        if r.finished {
            return None;
        }
        match r.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), r)),
            Ok(None) => None,
            Err(e) => {
                r.finished = true;
                if let Some((_conn, permit)) = r.held.take() {
                    // The connection is in an unknown state: closed, not given back.
                    permit.forget();
                }
                Some((Err(e), r))
            }
        }
    })
    .boxed()
}

struct TableRead {
    pool: Arc<CopyPool>,
    table: OwnTable,
    held: Option<(CopyConn, OwnedSemaphorePermit)>,
    copy: Option<std::pin::Pin<Box<tokio_postgres::CopyOutStream>>>,
    counter: Option<PieceCounter>,
    done: Option<Done>,
    /// The COPY has ended and the end-of-data marker has gone out.
    ended: bool,
    finished: bool,
}

impl TableRead {
    /// Take a connection, lock the table without waiting (a conflicting lock request
    /// queued since the snapshot connection locked it would otherwise deadlock the dump),
    /// and start its COPY.
    async fn begin(&mut self) -> Result<()> {
        let permit = self
            .pool
            .available
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Cancelled,
                    "the dump's COPY connections are closed",
                )
            })?;
        let mut conn = self
            .pool
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .ok_or_else(|| Error::new(ErrorKind::Other, "no COPY connection is left"))?;
        let q = self.table.qualified.clone();
        let copy_sql = format!("COPY {q} {} TO stdout;", self.table.column_list());
        let started = async {
            conn.execute(&format!("LOCK TABLE {q} IN ACCESS SHARE MODE NOWAIT"))
                .await?
                .map_err(|e| {
                    db_error(
                        format!(
                            "cannot lock table {q}: someone asked for a conflicting lock after \
                             the backup had locked it"
                        ),
                        e,
                    )
                })?;
            driven(&mut conn.connection, conn.client.copy_out(&copy_sql))
                .await?
                .map_err(|e| db_error(format!("cannot start the COPY of {q}"), e))
        }
        .await;
        self.held = Some((conn, permit));
        self.copy = Some(Box::pin(started?));
        Ok(())
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.ended {
            self.finish()?;
            return Ok(None);
        }
        if self.copy.is_none() {
            self.begin().await?;
        }
        let copy = self.copy.as_mut().expect("started");
        let (conn, _) = self.held.as_mut().expect("started");
        let q = &self.table.qualified;
        let (buf, ended) = driven(&mut conn.connection, async {
            let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
            while buf.len() < CHUNK_BYTES {
                match copy.next().await {
                    Some(Ok(rows)) => buf.extend_from_slice(&rows),
                    Some(Err(e)) => return Err(db_error(format!("the COPY of {q} failed"), e)),
                    None => {
                        buf.extend_from_slice(END_OF_DATA);
                        return Ok((buf, true));
                    }
                }
            }
            Ok((buf, false))
        })
        .await??;
        self.ended = ended;
        let chunk = buf.freeze();
        self.counter.as_mut().expect("counting").feed(&chunk)?;
        Ok(Some(chunk))
    }

    /// The table is read: give the connection back, hand over the count.
    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        self.copy = None;
        if let Some((conn, permit)) = self.held.take() {
            self.pool
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            drop(permit);
        }
        let counter = self.counter.take().expect("counting");
        (self.done.take().expect("one end"))(counter)
    }
}
