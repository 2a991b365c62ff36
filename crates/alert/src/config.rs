//! The alert settings as an administrator writes them: the `[alerts]` table
//! of the collector's settings file and the `--alert-*` flags (which
//! override the file key by key), turned into one [`Alerts`] sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{
    AlertError, AlertSettings, Alerts, Channel, SyslogChannel, SyslogTarget, WebhookChannel,
    WebhookRetry,
};

/// `[alerts]` in the collector's settings file (docs/POLICY.md "Alerts").
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertConfig {
    /// Webhook URLs, each sent every alert.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// A CA (PEM) that HTTPS webhooks' certificates must chain to, instead
    /// of the system's CA store.
    pub webhook_ca: Option<PathBuf>,
    /// `local` (/dev/log) or a [`SyslogTarget`] address.
    pub syslog: Option<String>,
    /// How long an edge stays told, e.g. `24h`, `30m`, `7d`.
    pub dedup_window: Option<String>,
    /// Alerts per minute, all edges together.
    pub rate: Option<u32>,
}

impl AlertConfig {
    /// `self` with what `top` sets on top (a list of webhooks replaces the
    /// list beneath).
    pub fn overlay(self, top: AlertConfig) -> AlertConfig {
        AlertConfig {
            webhooks: if top.webhooks.is_empty() {
                self.webhooks
            } else {
                top.webhooks
            },
            webhook_ca: top.webhook_ca.or(self.webhook_ca),
            syslog: top.syslog.or(self.syslog),
            dedup_window: top.dedup_window.or(self.dedup_window),
            rate: top.rate.or(self.rate),
        }
    }

    /// The sink, or `None` when no channel is configured; every value is
    /// checked, and a wrong one is named in the error.
    pub fn build(&self) -> Result<Option<Alerts>, AlertError> {
        let mut settings = AlertSettings::default();
        if let Some(window) = &self.dedup_window {
            settings.dedup_window = duration(window)?;
        }
        if let Some(rate) = self.rate {
            settings.rate = rate;
        }
        if self.webhook_ca.is_some() && self.webhooks.is_empty() {
            return Err(AlertError::Setting {
                key: "webhook-ca",
                reason: "given without any webhook".into(),
            });
        }
        let mut channels: Vec<Box<dyn Channel>> = Vec::new();
        for url in &self.webhooks {
            channels.push(Box::new(WebhookChannel::new(
                url,
                self.webhook_ca.as_deref(),
                WebhookRetry::default(),
            )?));
        }
        if let Some(syslog) = &self.syslog {
            let target = match syslog.as_str() {
                "local" => SyslogTarget::local(),
                address => SyslogTarget::parse(address)?,
            };
            channels.push(Box::new(SyslogChannel::new(target)?));
        }
        if channels.is_empty() {
            return Ok(None);
        }
        Alerts::new(settings, channels).map(Some)
    }
}

/// `24h`, `30m`, `7d`, `90s` (days of 24 hours).
fn duration(text: &str) -> Result<Duration, AlertError> {
    let bad = |reason: String| AlertError::Setting {
        key: "dedup-window",
        reason: format!("{text:?}: {reason}"),
    };
    let span: jiff::Span = text
        .parse()
        .map_err(|_| bad("expected a duration like 30m, 24h or 7d".into()))?;
    let seconds = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|e| bad(e.to_string()))?;
    if seconds <= 0.0 {
        return Err(bad("must be longer than zero".into()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file: AlertConfig = toml::from_str(
            "webhooks = [\"https://hooks.example/a\"]\nsyslog = \"local\"\nrate = 5\ndedup-window = \"12h\"\n",
        )
        .unwrap();
        let flags = AlertConfig {
            rate: Some(20),
            webhooks: vec!["http://127.0.0.1:9/b".into()],
            ..AlertConfig::default()
        };
        let merged = file.overlay(flags);
        assert_eq!(merged.webhooks, ["http://127.0.0.1:9/b"]);
        assert_eq!(merged.syslog.as_deref(), Some("local"));
        assert_eq!(merged.rate, Some(20));
        assert_eq!(merged.dedup_window.as_deref(), Some("12h"));
        let err = toml::from_str::<AlertConfig>("webhook = \"x\"").unwrap_err();
        assert!(err.to_string().contains("webhook"), "{err}");
    }

    #[test]
    fn durations_and_bad_values() {
        assert_eq!(duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(duration("90s").unwrap(), Duration::from_secs(90));
        let err = duration("soon").unwrap_err().to_string();
        assert!(
            err.contains("dedup-window") && err.contains("\"soon\""),
            "{err}"
        );
        assert!(duration("0s").is_err());
        assert!(AlertConfig::default().build().unwrap().is_none());
        let err = AlertConfig {
            webhook_ca: Some("/ca.pem".into()),
            ..AlertConfig::default()
        }
        .build()
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("webhook-ca"), "{err}");
    }
}
