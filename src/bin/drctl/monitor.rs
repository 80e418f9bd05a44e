//! `drctl run`'s monitoring: starts [`dr::monitoring::Monitor`] when dr.toml has a
//! `[monitoring]` table and says where the metrics are served.

use dr::config::Config;
use dr::core::schedule::Scheduler;
use dr::core::Result;
use dr::monitoring::Monitor;

/// Start monitoring `scheduler` (before it starts), if configured.
pub async fn start(config: &Config, scheduler: &Scheduler) -> Result<Option<Monitor>> {
    if !config.monitoring.is_enabled() {
        return Ok(None);
    }
    let monitor = Monitor::start(&config.monitoring, scheduler, config.objectives).await?;
    if let Some(addr) = monitor.address() {
        eprintln!("drctl: serving http://{addr}/metrics and /healthz");
    }
    Ok(Some(monitor))
}
