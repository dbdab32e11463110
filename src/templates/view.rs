//! Templates as the API shows them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::model::TemplateRow;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub id: Uuid,
    pub name: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for TemplateView {
    fn from(t: TemplateRow) -> Self {
        TemplateView {
            id: t.id,
            name: t.name,
            subject: t.subject,
            html: t.html,
            text: t.text,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}
