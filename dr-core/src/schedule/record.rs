//! Job records: each job's last outcome, stored in the repository at `jobs/<name>/last.json`
//! by whichever replica ran it.

use bytes::Bytes;

use super::job::JobOutcome;
use crate::error::{Error, ErrorKind, Result};
use crate::names::check_job_name;
use crate::repo::Repository;
use crate::storage::{PutOptions, StorageExt};

/// Prefix under which job records live: `jobs/<name>/last.json`.
pub const JOBS_PREFIX: &str = "jobs/";

/// Path of a job's record.
pub fn record_path(job: &str) -> String {
    format!("{JOBS_PREFIX}{job}/last.json")
}

/// The last outcome of job `job` stored in `repo`, if any.
pub async fn read_record(repo: &Repository, job: &str) -> Result<Option<JobOutcome>> {
    check_job_name(job)?;
    let path = record_path(job);
    match repo.storage().get_bytes(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(format!(
                "the job record {path} is malformed; delete it to start afresh"
            ))
            .with_source(e)
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.with_context("job", job)),
    }
}

/// Store `outcome` as its job's record (`jobs/<name>/last.json`).
pub async fn write_record(repo: &Repository, outcome: &JobOutcome) -> Result<()> {
    check_job_name(&outcome.job)?;
    let json = serde_json::to_vec_pretty(outcome).expect("outcome serializes");
    repo.storage()
        .put_bytes(
            &record_path(&outcome.job),
            Bytes::from(json),
            PutOptions::default(),
        )
        .await
        .map_err(|e| e.with_context("job", &outcome.job))
}
