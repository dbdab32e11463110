//! SMTP submission (issue 14, API.md "SMTP submission"): STARTTLS on
//! `submission.bind`, implicit TLS on `submission.tls_bind`, AUTH PLAIN or
//! LOGIN with a tenant API key (`send`) as the password, then each message
//! goes through `emails::raw::send_raw`, the send path of the API. The
//! protocol is `crate::smtp_server`'s; [`handler`] decides what to accept
//! and maps service results to reply codes.

mod handler;
pub mod scheduled;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

use crate::emails::input::MAX_RECIPIENTS;
use crate::smtp_server::{DataBudget, Limits, Security, Server};
use crate::state::AppState;

pub use handler::SubmissionHandler;

/// The listeners `start` bound: STARTTLS and, when configured, implicit TLS.
pub struct Listeners {
    pub starttls: Server,
    pub implicit_tls: Option<Server>,
}

impl Listeners {
    pub async fn stop(self) {
        self.starttls.stop().await;
        if let Some(s) = self.implicit_tls {
            s.stop().await;
        }
    }
}

/// The certificate chain and key of `submission.tls_cert_file` /
/// `tls_key_file` (PEM), for rustls with the ring provider.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("submission.tls_cert_file: cannot read {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("submission.tls_key_file: cannot read {}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("submission: the certificate does not match the key")?;
    Ok(Arc::new(config))
}

/// Starts the listeners (in `serve` and `api`); `None` when
/// `submission.bind` is empty, or when no certificate is configured and
/// plaintext AUTH is not allowed (nobody could authenticate: logged).
pub async fn start(state: &AppState) -> anyhow::Result<Option<Listeners>> {
    let s = &state.settings.submission;
    if s.bind.is_empty() {
        return Ok(None);
    }
    let tls = match s.tls_cert_file.is_empty() {
        true => None,
        false => Some(tls_config(
            Path::new(&s.tls_cert_file),
            Path::new(&s.tls_key_file),
        )?),
    };
    if tls.is_none() && !s.allow_plaintext_auth {
        tracing::warn!(
            "submission.bind is set but submission.tls_cert_file is not (and plaintext AUTH is off): no client could authenticate, SMTP submission not started"
        );
        return Ok(None);
    }
    let settings = &state.settings;
    let limits = Limits {
        hostname: if settings.bounces.domain.is_empty() {
            "postline".into()
        } else {
            settings.bounces.domain.clone()
        },
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        max_message_bytes: settings.limits.max_message_bytes,
        max_recipients: MAX_RECIPIENTS,
        command_timeout: Duration::from_secs(s.command_timeout_secs),
        data_timeout: Duration::from_secs(s.data_timeout_secs),
        // One budget for both listeners (`limits` is cloned for each).
        data_budget: Some(DataBudget::new(
            s.max_inflight_bytes,
            settings.limits.max_message_bytes,
        )),
        ..Limits::default()
    };
    let security = Security {
        tls: tls.clone(),
        implicit_tls: false,
        auth: true,
        plaintext_auth: s.allow_plaintext_auth,
        smtputf8: true,
    };
    let handler = Arc::new(SubmissionHandler::new(state.clone()));
    let starttls = Server::bind_with(&s.bind, limits.clone(), security.clone(), handler.clone())
        .await
        .map_err(|e| anyhow::anyhow!("submission.bind: cannot bind {}: {e}", s.bind))?;
    tracing::info!(addr = %starttls.addr(), "SMTP submission listening (STARTTLS)");
    let implicit_tls = match (s.tls_bind.as_str(), tls) {
        ("", _) => None,
        (_, None) => anyhow::bail!("submission.tls_bind needs submission.tls_cert_file"),
        (bind, Some(_)) => {
            let security = Security {
                implicit_tls: true,
                ..security
            };
            let server = Server::bind_with(bind, limits, security, handler)
                .await
                .map_err(|e| anyhow::anyhow!("submission.tls_bind: cannot bind {bind}: {e}"))?;
            tracing::info!(addr = %server.addr(), "SMTP submission listening (implicit TLS)");
            Some(server)
        }
    };
    Ok(Some(Listeners {
        starttls,
        implicit_tls,
    }))
}
