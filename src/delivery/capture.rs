//! The local default transport: each message becomes
//! `<capture_dir>/<tenant_id>/<email_id>.eml`, so Postline runs (and can be
//! tried end to end) with no relay at all.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Outcome, OutgoingMessage, Transport};

pub struct CaptureTransport {
    dir: PathBuf,
}

impl CaptureTransport {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaptureTransport { dir: dir.into() }
    }

    /// Where a message is (or will be) captured.
    pub fn path_for(&self, msg: &OutgoingMessage) -> PathBuf {
        self.dir
            .join(msg.tenant_id.to_string())
            .join(format!("{}.eml", msg.email_id))
    }
}

#[async_trait]
impl Transport for CaptureTransport {
    #[tracing::instrument(skip_all, fields(tenant_id = %msg.tenant_id, email_id = %msg.email_id))]
    async fn send(&self, msg: &OutgoingMessage) -> Outcome {
        let path = self.path_for(msg);
        match write_atomically(&path, &msg.raw).await {
            // The path is the operator's: logged, never stored where the
            // tenant reads it.
            Ok(()) => {
                tracing::debug!(path = %path.display(), "message captured");
                Outcome::Delivered {
                    response: "250 captured".into(),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "capture failed");
                Outcome::deferred(format!("capture failed ({})", e.kind()))
            }
        }
    }
}

/// Readers (and a retry after a crash) see either the whole file or none:
/// write a uniquely named sibling, then rename it into place.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("capture path has no parent directory"))?;
    tokio::fs::create_dir_all(dir).await?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    if let Err(e) = tokio::fs::write(&tmp, bytes).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    if let Err(e) = tokio::fs::rename(&tmp, path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    Ok(())
}
