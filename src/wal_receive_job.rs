//! The scheduler's WAL-receive job (`kind = "wal-receive"` in dr.toml): a
//! [`WalReceiver`](dr_db::wal::WalReceiver) that the scheduler keeps running
//! ([`Job::keep_running`](dr_core::schedule::Job::keep_running)) beside the scheduled
//! backups, for an RPO of seconds. The receiver itself rides out a server that goes away
//! while streaming; when it ends anyway (the server is unreachable at start, a storage
//! error retrying did not fix), the scheduler starts it again with a backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use dr_core::schedule::{JobContext, JobRunner, JobSummary};
use dr_core::{Encryptor, Result};
use dr_db::wal::WalReceiver;

/// Streams one server's WAL into the scheduler's repository until the scheduler stops.
pub struct WalReceiveJob {
    db: tokio_postgres::Config,
    encryptor: Arc<dyn Encryptor>,
    spool: PathBuf,
    slot: Option<String>,
    interval: Option<Duration>,
}

impl std::fmt::Debug for WalReceiveJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReceiveJob")
            .field("spool", &self.spool)
            .field("slot", &self.slot)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl WalReceiveJob {
    /// Stream from the server `db` connects to (a user with REPLICATION) through the local
    /// directory `spool`, encrypting with `encryptor` (public recipients suffice).
    pub fn new(
        db: tokio_postgres::Config,
        encryptor: Arc<dyn Encryptor>,
        spool: impl Into<PathBuf>,
    ) -> WalReceiveJob {
        WalReceiveJob {
            db,
            encryptor,
            spool: spool.into(),
            slot: None,
            interval: None,
        }
    }

    /// Use the replication slot `name` instead of [`dr_db::wal::DEFAULT_SLOT`].
    pub fn slot(mut self, name: impl Into<String>) -> WalReceiveJob {
        self.slot = Some(name.into());
        self
    }

    /// Store the growing segment this often (default 2 s).
    pub fn interval(mut self, every: Duration) -> WalReceiveJob {
        self.interval = Some(every);
        self
    }
}

#[async_trait]
impl JobRunner for WalReceiveJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let mut receiver = WalReceiver::new(
            ctx.repository().clone(),
            self.encryptor.clone(),
            self.db.clone(),
            &self.spool,
        );
        if let Some(slot) = &self.slot {
            receiver = receiver.slot(slot);
        }
        if let Some(every) = self.interval {
            receiver = receiver.interval(every);
        }
        let r = receiver.run(ctx.stopping()).await?;
        let mut summary = JobSummary::new(r.to_string())
            .figure("segments", r.segments)
            .figure("partial_copies", r.partial_copies)
            .figure("stored_bytes", r.stored_bytes)
            .figure("reconnects", r.reconnects);
        if let Some(reach) = r.reach {
            summary = summary.figure("reach", reach.to_string());
        }
        Ok(summary)
    }
}
