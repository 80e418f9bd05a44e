//! The settings that turn a restored data directory into a server recovering to a target.
//!
//! [`RecoverySettings::write`] creates `recovery.signal` and appends the recovery settings
//! to `postgresql.auto.conf` (which wins over `postgresql.conf`). It also sets
//! `archive_mode = off` unless archiving is asked for: a restored copy that kept the
//! production `archive_command` would push its own WAL, on a new timeline, into the
//! production archive.

use std::fmt::Write as _;
use std::path::Path;

use dr_core::wal::{RecoveryTarget, TargetTimeline};
use dr_core::{Error, Result};

/// What the server does when it reaches the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TargetAction {
    /// End recovery and open for writes on a new timeline.
    #[default]
    Promote,
    /// Stay in recovery, read-only, so the result can be inspected first.
    Pause,
    /// Stop the server.
    Shutdown,
}

impl std::str::FromStr for TargetAction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "promote" => Ok(TargetAction::Promote),
            "pause" => Ok(TargetAction::Pause),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(Error::invalid(format!(
                "'{s}' is not a target action (expected promote, pause or shutdown)"
            ))),
        }
    }
}

impl TargetAction {
    fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// Recovery settings of a restored data directory.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    /// `restore_command`, e.g. `drctl wal-fetch --repo … %f %p`.
    pub restore_command: String,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// What happens there.
    pub action: TargetAction,
    /// Which timeline recovery follows.
    pub timeline: TargetTimeline,
    /// Keep `archive_mode` as restored (the copy archives its WAL); off by default.
    pub archive: bool,
}

impl RecoverySettings {
    /// The lines appended to `postgresql.auto.conf`.
    pub fn to_conf(&self) -> String {
        let mut s = String::from("\n# Written by dr: point-in-time recovery.\n");
        let mut set = |k: &str, v: &str| {
            let _ = writeln!(s, "{k} = '{}'", v.replace('\'', "''"));
        };
        set("restore_command", &self.restore_command);
        match &self.target {
            RecoveryTarget::Latest => {}
            RecoveryTarget::Time(t) => set(
                "recovery_target_time",
                &t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
            ),
            RecoveryTarget::Lsn(l) => set("recovery_target_lsn", &l.to_string()),
            RecoveryTarget::Xid(x) => set("recovery_target_xid", &x.to_string()),
            RecoveryTarget::Name(n) => set("recovery_target_name", n),
        }
        if !matches!(self.target, RecoveryTarget::Latest) {
            set("recovery_target_action", self.action.as_str());
            // Stop before a transaction that commits exactly at the target time, and after
            // the target transaction: PostgreSQL's defaults, stated so the file says it.
            set("recovery_target_inclusive", "on");
        }
        let tl = match self.timeline {
            TargetTimeline::Latest => "latest".to_string(),
            TargetTimeline::Current => "current".to_string(),
            TargetTimeline::Id(n) => n.to_string(),
        };
        set("recovery_target_timeline", &tl);
        if !self.archive {
            set("archive_mode", "off");
        }
        s
    }

    /// Write `recovery.signal` and the settings into the data directory `pgdata`.
    pub fn write(&self, pgdata: &Path) -> Result<()> {
        use std::io::Write;
        let io = |e| {
            Error::io(
                format!("cannot write recovery settings into {}", pgdata.display()),
                e,
            )
        };
        let mut conf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(pgdata.join("postgresql.auto.conf"))
            .map_err(io)?;
        conf.write_all(self.to_conf().as_bytes()).map_err(io)?;
        conf.sync_all().map_err(io)?;
        std::fs::write(pgdata.join("recovery.signal"), b"").map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_quote_and_turn_archiving_off() {
        let s = RecoverySettings {
            restore_command: "drctl wal-fetch --repo '/srv/r' %f %p".into(),
            target: RecoveryTarget::Name("before 'drop'".into()),
            action: TargetAction::Pause,
            timeline: TargetTimeline::Id(2),
            archive: false,
        };
        let c = s.to_conf();
        assert!(
            c.contains("restore_command = 'drctl wal-fetch --repo ''/srv/r'' %f %p'"),
            "{c}"
        );
        assert!(
            c.contains("recovery_target_name = 'before ''drop'''"),
            "{c}"
        );
        assert!(c.contains("recovery_target_action = 'pause'"), "{c}");
        assert!(c.contains("recovery_target_timeline = '2'"), "{c}");
        assert!(c.contains("archive_mode = 'off'"), "{c}");
        let latest = RecoverySettings {
            target: RecoveryTarget::Latest,
            archive: true,
            ..s
        }
        .to_conf();
        assert!(!latest.contains("recovery_target_action"), "{latest}");
        assert!(!latest.contains("archive_mode"), "{latest}");
    }
}
