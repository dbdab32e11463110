//! Raw SQL that diesel keeps prepared (issue 24). `diesel::sql_query` marks
//! every statement "unsafe to cache": each call is an unnamed `Parse` (a
//! round trip, a parse and a plan) and then its `Bind`/`Execute`, and a
//! multi-row `insert_into(..).values(vec)` has one text per row count, so
//! it is never cached either. [`query`] takes one fixed text with `$n`
//! placeholders and the same `.bind::<ST, _>(value)` calls as `sql_query`;
//! its text never changes, so the connection's statement cache prepares it
//! once and every later call is one `Bind`/`Execute`.
//!
//! Placeholders are found by scanning the text for `$` followed by digits;
//! the text must not hold such a sequence anywhere else (in a string
//! literal, say). A placeholder used twice binds its value twice.
//!
//! A prepared statement may be run with Postgres's generic plan after its
//! fifth execution, planned without the values (array sizes unknown) and
//! with the statistics of that moment. Fine for inserts and primary-key
//! lookups; a join whose best plan depends on the values or on a table's
//! growth (the webhook outbox's `JOIN webhooks … JOIN emails`) stays on
//! `sql_query`, planned at every call.

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// A statement with a fixed text; see the module.
#[must_use = "a query does nothing until executed or loaded"]
pub struct Prepared<'a> {
    sql: &'static str,
    binds: Vec<Box<dyn QueryFragment<Pg> + Send + 'a>>,
}

/// A statement of this fixed text, binds to follow in `$1, $2, …` order.
pub fn query<'a>(sql: &'static str) -> Prepared<'a> {
    Prepared {
        sql,
        binds: Vec::new(),
    }
}

#[derive(diesel::QueryableByName)]
struct Flag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    flag: bool,
}

impl<'a> Prepared<'a> {
    /// Runs a statement whose one row has one boolean column named `flag`
    /// (a probe such as `SELECT EXISTS (…) AS flag`) and returns it.
    pub fn flag(self, conn: &mut diesel::PgConnection) -> QueryResult<bool> {
        Ok(self.get_result::<Flag>(conn)?.flag)
    }

    /// Binds the next placeholder (`$1` first) to `value` as SQL type `ST`.
    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        Pg: HasSqlType<ST>,
        V: ToSql<ST, Pg> + Send + 'a,
        ST: Send + 'a,
    {
        self.binds.push(Box::new(Bind::<ST, V> {
            value,
            sql_type: PhantomData,
        }));
        self
    }
}

struct Bind<ST, V> {
    value: V,
    sql_type: PhantomData<ST>,
}

impl<ST, V> QueryFragment<Pg> for Bind<ST, V>
where
    Pg: HasSqlType<ST>,
    V: ToSql<ST, Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, V>(&self.value)
    }
}

/// Splits `sql` at its `$n` placeholders: the text before each and the
/// 1-based number, then the rest.
fn placeholders(sql: &str) -> (Vec<(&str, usize)>, &str) {
    let bytes = sql.as_bytes();
    let (mut parts, mut start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 {
                let n = sql[i + 1..i + 1 + digits].parse().unwrap_or(0);
                parts.push((&sql[start..i], n));
                i += 1 + digits;
                start = i;
                continue;
            }
        }
        i += 1;
    }
    (parts, &sql[start..])
}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (parts, rest) = placeholders(self.sql);
        for (text, n) in parts {
            out.push_sql(text);
            let bind = n
                .checked_sub(1)
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("${n} has no bound value").into(),
                    )
                })?;
            bind.walk_ast(out.reborrow())?;
        }
        out.push_sql(rest);
        Ok(())
    }
}

// Not a static query id: the statement cache keys it by its text (and the
// bind types), so each distinct text is prepared once per connection.
impl QueryId for Prepared<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Prepared<'_> {}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_split_the_text_at_each_number() {
        let (parts, rest) =
            placeholders("SELECT $1, $2::int[] || $10 FROM t WHERE a = $2 AND b = '$'");
        assert_eq!(
            parts,
            vec![
                ("SELECT ", 1),
                (", ", 2),
                ("::int[] || ", 10),
                (" FROM t WHERE a = ", 2)
            ]
        );
        assert_eq!(rest, " AND b = '$'");
        assert_eq!(placeholders("SELECT 1"), (vec![], "SELECT 1"));
    }
}
