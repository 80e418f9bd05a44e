//! `drctl run`: the schedule of a dr.toml in the foreground, or one job now.

use std::path::Path;
use std::time::Duration;

use dr::config::Config;
use dr::core::schedule::{format_duration, JobOutcome, SchedulerEvent};
use dr::core::{Error, ErrorKind, Result};

use crate::output::{print_json, Output};

pub async fn run(out: Output, config: &Path, once: Option<String>) -> Result<()> {
    let config = Config::from_path(config)?;
    let scheduler = config.scheduler().await?;
    match once {
        Some(job) => {
            let outcomes = run_once(&scheduler, &job).await?;
            if out.is_json() {
                print_json(&outcomes);
            } else {
                for o in &outcomes {
                    println!("{}", outcome_line(o));
                }
            }
            match outcomes.iter().find(|o| !o.ok) {
                None => Ok(()),
                Some(failed) => {
                    let e = failed.error.as_ref();
                    Err(Error::new(
                        ErrorKind::from_name(e.map_or("other", |e| e.kind.as_str())),
                        format!(
                            "job '{}' failed: {}",
                            failed.job,
                            e.map_or("unknown error", |e| e.message.as_str())
                        ),
                    ))
                }
            }
        }
        None => daemon(out, &config, scheduler).await,
    }
}

/// Run `job` now; SIGINT or SIGTERM asks it to stop (a wal-receive job stores what it
/// holds and ends), a second signal aborts it.
async fn run_once(scheduler: &dr::core::schedule::Scheduler, job: &str) -> Result<Vec<JobOutcome>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot listen for SIGTERM", e))?;
    let run = scheduler.run_now(job);
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => return r,
        _ = signalled(&mut term) => {}
    }
    eprintln!("drctl: stopping job '{job}' (signal again to abort it now)");
    scheduler.stop();
    tokio::select! {
        r = &mut run => return r,
        _ = signalled(&mut term) => {}
    }
    eprintln!("drctl: aborting job '{job}'");
    scheduler.abort_running();
    run.await
}

/// SIGINT or SIGTERM.
async fn signalled(term: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn daemon(
    out: Output,
    config: &Config,
    scheduler: dr::core::schedule::Scheduler,
) -> Result<()> {
    let mut events = scheduler.subscribe();
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => print_event(out, &event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("drctl: {n} scheduler events were dropped (output too slow)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let _monitor = crate::monitor::start(config, &scheduler).await?;
    scheduler.start().await?;
    if !out.is_json() {
        println!(
            "drctl: running {} job(s) on {}; stop with Ctrl-C or SIGTERM",
            scheduler.jobs().len(),
            scheduler.repository().storage().describe()
        );
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot listen for SIGTERM", e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let grace = config.scheduler.shutdown_grace;
    eprintln!(
        "drctl: stopping; a running job gets up to {} to finish (signal again to abort it now)",
        format_duration(grace)
    );
    let stopping = scheduler.shutdown(grace);
    tokio::pin!(stopping);
    tokio::select! {
        _ = &mut stopping => {}
        _ = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        } => {
            eprintln!("drctl: aborting the running job");
            scheduler.abort_running();
            stopping.await;
        }
    }
    // Let the printer drain what is queued.
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();
    Ok(())
}

fn print_event(out: Output, event: &SchedulerEvent) {
    if out.is_json() {
        println!(
            "{}",
            serde_json::to_string(event).expect("events serialize")
        );
        return;
    }
    match event {
        SchedulerEvent::Planned {
            job,
            scheduled_for,
            run_at,
        } => println!(
            "{job}: next run {} (tick {})",
            run_at.format("%Y-%m-%d %H:%M:%S UTC"),
            scheduled_for.format("%H:%M:%S")
        ),
        SchedulerEvent::Started { job, kind, .. } => println!("{job}: {kind} started"),
        SchedulerEvent::Progress { .. } => {}
        SchedulerEvent::Succeeded(o) | SchedulerEvent::Failed(o) => println!("{}", outcome_line(o)),
        SchedulerEvent::Skipped {
            job,
            reason,
            detail,
            ..
        } => println!("{job}: skipped ({reason:?}): {detail}"),
    }
}

fn outcome_line(o: &JobOutcome) -> String {
    let secs = o.duration_ms as f64 / 1000.0;
    let mut line = match (&o.summary, &o.error) {
        (Some(s), _) if o.ok => format!("{}: ok in {secs:.1} s: {}", o.job, s.message),
        (_, Some(e)) => format!("{}: FAILED after {secs:.1} s: {}", o.job, e.message),
        _ => format!(
            "{}: {} in {secs:.1} s",
            o.job,
            if o.ok { "ok" } else { "FAILED" }
        ),
    };
    if let Some(r) = &o.rpo {
        match (r.within, r.age_secs) {
            (true, Some(age)) => line.push_str(&format!(
                " [RPO {} met: newest backup {} old]",
                format_duration(Duration::from_secs(r.rpo_secs)),
                format_duration(Duration::from_secs(age))
            )),
            (false, Some(age)) => line.push_str(&format!(
                " [RPO {} MISSED: newest backup {} old]",
                format_duration(Duration::from_secs(r.rpo_secs)),
                format_duration(Duration::from_secs(age))
            )),
            (_, None) => line.push_str(" [RPO MISSED: no complete backup]"),
        }
    }
    line
}
