//! Watching a running scheduler: `/metrics` and `/healthz` over HTTP, and webhooks on
//! failure or breach. `drctl run` starts it when dr.toml has a `[monitoring]` table:
//!
//! ```toml
//! [monitoring]
//! listen = "127.0.0.1:9187"                # serves /metrics and /healthz
//! refresh = "1m"                           # how often the repository status is re-read
//!
//! [[monitoring.webhooks]]
//! url_env = "DR_SLACK_WEBHOOK"             # the URL is a credential: keep it in the environment
//! format = "slack"                         # or json (default)
//! ```
//!
//! Metrics: `dr_job_runs_total{job_name,kind,outcome}`, `dr_job_failures_total`,
//! `dr_job_skipped_total{reason}`, `dr_job_bytes_total`, the histogram
//! `dr_job_duration_seconds`, `dr_job_last_success_timestamp_seconds`, and the gauges of
//! [`crate::report::prometheus`] (backup age per series, objectives, last verify and drill)
//! judged at each scrape. Notifications: `job_failed` for every failed run, and
//! `objective_breached` when the repository's [status](crate::status) turns breached (once,
//! until it recovers).

pub mod metrics;
pub mod server;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use dr_core::schedule::{parse_duration, Scheduler, SchedulerEvent};
use dr_core::{Error, Repository, Result};

use crate::drill::Objectives;
use crate::status::{assess, gather, Health};
use metrics::Metrics;
use webhooks::{Notification, Notifier, WebhookConfig};

/// `[monitoring]` in dr.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Address for `/metrics` and `/healthz` (none: no server).
    #[serde(default)]
    pub listen: Option<String>,
    /// How often the repository's status is re-read for the gauges and breach alerts
    /// (default `1m`); it is also re-read after every job run.
    #[serde(default)]
    pub refresh: Option<String>,
    /// Where to send notifications.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

impl MonitoringConfig {
    /// Check the addresses, durations and webhooks (their URLs from the environment).
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        self.refresh_every()?;
        for w in &self.webhooks {
            if w.url.is_some() == w.url_env.is_some() {
                return Err(Error::invalid(
                    "monitoring.webhooks: give exactly one of url and url_env",
                ));
            }
        }
        Ok(())
    }

    fn listen_addr(&self) -> Result<Option<SocketAddr>> {
        self.listen
            .as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    Error::invalid(format!(
                        "monitoring.listen: '{a}' is not an address (e.g. 127.0.0.1:9187)"
                    ))
                })
            })
            .transpose()
    }

    fn refresh_every(&self) -> Result<Duration> {
        match &self.refresh {
            Some(d) => {
                let d = parse_duration(d)
                    .map_err(|e| Error::invalid(format!("monitoring.refresh: {}", e.message())))?;
                if d.is_zero() {
                    return Err(Error::invalid("monitoring.refresh: must be more than 0"));
                }
                Ok(d)
            }
            None => Ok(Duration::from_secs(60)),
        }
    }

    /// Whether anything is configured.
    pub fn is_enabled(&self) -> bool {
        self.listen.is_some() || !self.webhooks.is_empty()
    }
}

/// A running monitor. Dropping it stops the server and the event loop.
#[derive(Debug)]
pub struct Monitor {
    metrics: Arc<Metrics>,
    address: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Monitor {
    /// Watch `scheduler` (subscribe before starting it, so no event is missed): serve
    /// metrics if `config.listen` is set, notify `config.webhooks`.
    pub async fn start(
        config: &MonitoringConfig,
        scheduler: &Scheduler,
        objectives: Objectives,
    ) -> Result<Monitor> {
        let metrics = Arc::new(Metrics::new(objectives));
        let hooks = config
            .webhooks
            .iter()
            .map(WebhookConfig::resolve)
            .collect::<Result<Vec<_>>>()?;
        let notifier = Notifier::new(hooks)?;
        let mut tasks = Vec::new();
        let address = match config.listen_addr()? {
            Some(addr) => {
                let (bound, task) = server::serve(addr, metrics.clone()).await?;
                tasks.push(task);
                Some(bound)
            }
            None => None,
        };
        let watcher = Watcher {
            repo: scheduler.repository().clone(),
            objectives,
            metrics: metrics.clone(),
            notifier,
            breached: false,
        };
        let events = scheduler.subscribe();
        let refresh = config.refresh_every()?;
        tasks.push(tokio::spawn(watcher.run(events, refresh)));
        Ok(Monitor {
            metrics,
            address,
            tasks,
        })
    }

    /// Where `/metrics` is served (the bound port when the configuration said port 0).
    pub fn address(&self) -> Option<SocketAddr> {
        self.address
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// Feeds events into the metrics, re-reads the status, and notifies.
struct Watcher {
    repo: Repository,
    objectives: Objectives,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    /// Whether the last status was breached (a breach is announced once).
    breached: bool,
}

impl Watcher {
    async fn run(
        mut self,
        mut events: tokio::sync::broadcast::Receiver<SchedulerEvent>,
        refresh: Duration,
    ) {
        self.refresh().await;
        let mut tick = tokio::time::interval(refresh);
        tick.tick().await;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&event).await,
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "monitoring missed scheduler events"),
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => self.refresh().await,
            }
        }
    }

    async fn on_event(&mut self, event: &SchedulerEvent) {
        self.metrics.observe(event);
        match event {
            SchedulerEvent::Failed(o) => {
                let reason = o
                    .error
                    .as_ref()
                    .map_or("unknown error".to_string(), |e| e.message.clone());
                let n = Notification {
                    event: "job_failed".into(),
                    at: Utc::now(),
                    repository: self.repo.storage().describe(),
                    job: Some(o.job.clone()),
                    message: format!("job '{}' ({}) failed on {}", o.job, o.kind, o.host),
                    reasons: vec![reason],
                };
                self.notifier.send(&n).await;
                self.refresh().await;
            }
            SchedulerEvent::Succeeded(_) => self.refresh().await,
            _ => {}
        }
    }

    /// Re-read the repository; announce a new breach.
    async fn refresh(&mut self) {
        let facts = match gather(&self.repo).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e.report(), "monitoring could not read the repository status");
                return;
            }
        };
        let status = assess(&facts, &self.objectives, Utc::now());
        self.metrics.set_facts(facts);
        let breached = status.health == Health::Breached;
        if breached && !self.breached {
            let n = Notification {
                event: "objective_breached".into(),
                at: status.at,
                repository: status.repository.clone(),
                job: None,
                message: format!(
                    "recoverability objectives breached in {}",
                    status.repository
                ),
                reasons: status.reasons(),
            };
            self.notifier.send(&n).await;
        }
        self.breached = breached;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<MonitoringConfig> {
        let c: MonitoringConfig =
            toml::from_str(toml).map_err(|e| Error::invalid(e.to_string()))?;
        c.validate().map(|()| c)
    }

    #[test]
    fn bad_monitoring_settings_are_refused_with_their_key() {
        let e = parse("listen = \"localhost\"").unwrap_err();
        assert!(e.message().starts_with("monitoring.listen:"), "{e}");
        let e = parse("refresh = \"0s\"").unwrap_err();
        assert!(e.message().starts_with("monitoring.refresh:"), "{e}");
        let e = parse("[[webhooks]]\nformat = \"slack\"").unwrap_err();
        assert!(
            e.message().contains("exactly one of url and url_env"),
            "{e}"
        );
        assert!(parse("bogus = 1").is_err());
        let ok = parse("listen = \"127.0.0.1:0\"\n[[webhooks]]\nurl_env = \"X\"").unwrap();
        assert!(ok.is_enabled());
    }
}
