//! Cursor pagination shared by every list endpoint: newest first, ordered by
//! `(created_at DESC, id DESC)`; the cursor is the position of the last row.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// Orders a boxed diesel query over `$table` newest first (`created_at DESC,
/// id DESC`), takes one row more than `$page.limit` (for `Page::from_rows`) and
/// starts after `$page.after`'s position: the one keyset filter for tables
/// that `table.created_at`/`table.id` name.
#[macro_export]
macro_rules! keyset_page {
    ($query:expr, $table:ident, $page:expr) => {{
        let page: &$crate::db::pagination::PageRequest = &$page;
        let mut q = $query
            .order(($table::created_at.desc(), $table::id.desc()))
            .limit(page.limit + 1);
        if let Some(c) = &page.after {
            q = q.filter(
                $table::created_at
                    .lt(c.created_at)
                    .or($table::created_at.eq(c.created_at).and($table::id.lt(c.id))),
            );
        }
        q
    }};
}

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// `?limit=&cursor=` as sent by the client.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
}

/// A validated page request.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<Cursor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!("{}|{}", self.created_at.timestamp_micros(), self.id);
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let (micros, id) = raw.split_once('|')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Cursor {
            created_at,
            id: id.parse().ok()?,
        })
    }
}

impl PageQuery {
    pub fn validate(&self) -> AppResult<PageRequest> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::invalid("limit", "must be between 1 and 100"));
        }
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                Cursor::decode(c)
                    .ok_or_else(|| AppError::invalid("cursor", "is not a valid cursor"))?,
            ),
        };
        Ok(PageRequest { limit, after })
    }
}

/// `{"data": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says
    /// whether another page exists.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        req: PageRequest,
        position: impl Fn(&R) -> Cursor,
        map: impl FnMut(R) -> T,
    ) -> Page<T> {
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| position(r).encode())
        } else {
            None
        };
        Page {
            data: rows.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        assert_eq!(Cursor::decode(""), None);
    }

    #[test]
    fn limit_bounds() {
        let q = |l| {
            PageQuery {
                limit: Some(l),
                cursor: None,
            }
            .validate()
        };
        assert!(q(0).is_err());
        assert!(q(101).is_err());
        assert_eq!(q(100).unwrap().limit, 100);
    }
}
