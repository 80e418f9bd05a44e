//! Notifications on failure or breach: a POST of a generic JSON body or a Slack-compatible
//! one (`{"text": …}`) to each configured webhook, retried on network errors, 429 and 5xx.
//!
//! Webhook URLs are secrets (a Slack incoming-webhook URL is its own credential): they come
//! from the environment (`url_env`) or the file, and are never logged, printed or put in
//! errors; logs name only the scheme and host.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use dr_core::{Error, Result};

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// A [`Notification`] as JSON.
    #[default]
    Json,
    /// Slack's incoming-webhook body: `{"text": "…"}` (Mattermost and others accept it).
    Slack,
}

/// `[[monitoring.webhooks]]` in dr.toml.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL itself (prefer `url_env`: the URL is a credential).
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable that holds the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Attempts after the first (default 3), with 1 s, 2 s, 4 s… between them.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_retries() -> u32 {
    3
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("url_env", &self.url_env)
            .field("format", &self.format)
            .field("retries", &self.retries)
            .finish()
    }
}

impl WebhookConfig {
    /// The URL, from the file or the environment.
    pub fn resolve(&self) -> Result<Webhook> {
        let url = match (&self.url, &self.url_env) {
            (Some(url), None) => url.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                Error::invalid(format!(
                    "monitoring.webhooks: the environment variable {var} (url_env) is not set"
                ))
            })?,
            _ => {
                return Err(Error::invalid(
                    "monitoring.webhooks: give exactly one of url and url_env",
                ))
            }
        };
        let parsed = url::Url::parse(&url).map_err(|_| {
            Error::invalid(format!(
                "monitoring.webhooks: the URL {} is malformed",
                redact(&url)
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid(format!(
                "monitoring.webhooks: {} is not an http(s) URL",
                redact(&url)
            )));
        }
        Ok(Webhook {
            url,
            format: self.format,
            retries: self.retries,
        })
    }
}

/// A webhook ready to call.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    format: WebhookFormat,
    retries: u32,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Webhook({}, {:?})", redact(&self.url), self.format)
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// `job_failed` or `objective_breached`.
    pub event: String,
    /// When it was noticed.
    pub at: DateTime<Utc>,
    /// The repository (its storage's description, without credentials).
    pub repository: String,
    /// The job, for `job_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// One line for people.
    pub message: String,
    /// The findings behind it (for a breach, one per series finding).
    pub reasons: Vec<String>,
}

impl Notification {
    /// The body for `format`.
    pub fn body(&self, format: WebhookFormat) -> serde_json::Value {
        match format {
            WebhookFormat::Json => serde_json::to_value(self).unwrap_or_default(),
            WebhookFormat::Slack => {
                let mut text = format!(":rotating_light: *dr*: {}", self.message);
                for r in &self.reasons {
                    text.push_str("\n• ");
                    text.push_str(r);
                }
                serde_json::json!({ "text": text })
            }
        }
    }
}

/// `scheme://host[:port]/…`: a URL with its path, query and user info left out.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(malformed URL)".into(),
    }
}

/// Sends notifications to every webhook.
#[derive(Debug, Clone)]
pub struct Notifier {
    hooks: Vec<Webhook>,
    client: reqwest::Client,
    backoff: Duration,
}

impl Notifier {
    /// A notifier for `hooks`.
    pub fn new(hooks: Vec<Webhook>) -> Result<Notifier> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("dr/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::new(dr_core::ErrorKind::Other, "cannot build the webhook client")
                    .with_source(e)
            })?;
        Ok(Notifier {
            hooks,
            client,
            backoff: Duration::from_secs(1),
        })
    }

    /// Whether there is any webhook.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Post `n` to every webhook; failures are logged (with the host only), not returned:
    /// a webhook that is down must not stop the scheduler. Returns how many accepted it.
    pub async fn send(&self, n: &Notification) -> usize {
        let mut delivered = 0;
        for hook in &self.hooks {
            match self.post(hook, &n.body(hook.format)).await {
                Ok(()) => delivered += 1,
                Err(e) => {
                    tracing::warn!(webhook = %redact(&hook.url), error = %e, "webhook notification failed")
                }
            }
        }
        delivered
    }

    async fn post(
        &self,
        hook: &Webhook,
        body: &serde_json::Value,
    ) -> std::result::Result<(), String> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut wait = self.backoff;
        let mut attempt = 0;
        loop {
            let sent = self
                .client
                .post(&hook.url)
                .header("content-type", "application/json")
                .body(bytes.clone())
                .send()
                .await;
            let retryable = match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let s = r.status();
                    if !(s.is_server_error() || s.as_u16() == 429) {
                        return Err(format!("answered {s}"));
                    }
                    format!("answered {s}")
                }
                // reqwest's errors can carry the URL: keep only what kind of failure it was.
                Err(e) if e.is_timeout() => "timed out".to_string(),
                Err(e) if e.is_connect() => "could not connect".to_string(),
                Err(_) => "request failed".to_string(),
            };
            if attempt >= hook.retries {
                return Err(format!("{retryable} ({} attempts)", attempt + 1));
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_never_show_in_debug_or_errors() {
        let config = WebhookConfig {
            url: Some("https://hooks.slack.com/services/T0/B0/SECRET".into()),
            url_env: None,
            format: WebhookFormat::Slack,
            retries: 3,
        };
        assert!(!format!("{config:?}").contains("SECRET"));
        let hook = config.resolve().unwrap();
        assert_eq!(
            format!("{hook:?}"),
            "Webhook(https://hooks.slack.com/…, Slack)"
        );
        let bad = WebhookConfig {
            url: Some("ftp://user:SECRET@host/x".into()),
            ..config
        };
        let err = bad.resolve().unwrap_err().report();
        assert!(
            err.contains("not an http(s) URL") && !err.contains("SECRET"),
            "{err}"
        );
    }

    #[test]
    fn slack_bodies_carry_the_message_and_reasons_as_text() {
        let n = Notification {
            event: "job_failed".into(),
            at: Utc::now(),
            repository: "s3://b/p".into(),
            job: Some("nightly".into()),
            message: "job 'nightly' (backup) failed".into(),
            reasons: vec!["disk full".into()],
        };
        let slack = n.body(WebhookFormat::Slack);
        let text = slack["text"].as_str().unwrap();
        assert!(text.contains("job 'nightly' (backup) failed") && text.contains("• disk full"));
        assert_eq!(n.body(WebhookFormat::Json)["job"], "nightly");
    }
}
