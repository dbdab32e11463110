//! Whose a console row is: a tenant's (its users and their sessions,
//! invitations and sign-in challenges, keyed `(tenant_id, …)`) or the
//! platform's (admins, in the `platform_console_*` reference tables). The
//! tokens of cookies and links name their owner, so the lookup of a session,
//! link or challenge is `(tenant_id, token_hash)` on one tenant's rows
//! (`docs/OPERATIONS.md` "Beyond one Postgres").

use uuid::Uuid;

use crate::config::Secret;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A platform admin's.
    Platform,
    /// A user of this tenant's.
    Tenant(Uuid),
}

impl Owner {
    /// `None` (no tenant) is the platform's.
    pub fn of(tenant: Option<Uuid>) -> Owner {
        tenant.map_or(Owner::Platform, Owner::Tenant)
    }

    pub fn tenant(self) -> Option<Uuid> {
        match self {
            Owner::Platform => None,
            Owner::Tenant(t) => Some(t),
        }
    }
}

/// Where the row of a presented token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The owner the token names.
    Of(Owner),
    /// A token issued before the split (migration 100029) names none: its
    /// row is looked up by the hash alone, among the platform's and then
    /// every tenant's (a query across shards, for such tokens only; they
    /// are gone once the sessions and links of that time expired).
    Unnamed,
}

/// Length of the random part: 32 bytes, base64url without padding.
const RANDOM_LEN: usize = 43;

/// A new token for a row of `owner`, `<owner>.<random>` (`p` for the
/// platform, the tenant id in hex otherwise), and its SHA-256 (what is
/// stored). The owner part only routes the lookup: the hash covers it, so
/// a token edited to name another owner matches nothing.
pub fn new_token(owner: Owner) -> (Secret, Vec<u8>) {
    let (random, _) = super::sessions::new_token();
    let text = match owner {
        Owner::Platform => format!("p.{}", random.expose()),
        Owner::Tenant(t) => format!("{}.{}", t.simple(), random.expose()),
    };
    let hash = super::sessions::digest(&text);
    (Secret::new(text), hash)
}

/// Where to look a presented token up, and its hash; `None` for what no
/// issued token looks like (found nowhere, without a query).
pub fn locate(token: &str) -> Option<(Scope, Vec<u8>)> {
    if token.is_empty() || token.len() > 128 {
        return None;
    }
    let scope = match token.split_once('.') {
        None if token.len() == RANDOM_LEN => Scope::Unnamed,
        None => return None,
        Some(("p", _)) => Scope::Of(Owner::Platform),
        Some((t, _)) if t.len() == 32 => Scope::Of(Owner::Tenant(Uuid::try_parse(t).ok()?)),
        Some(_) => return None,
    };
    Some((scope, super::sessions::digest(token)))
}

/// Runs `$body` on the table that holds `$owner`'s rows: `$t` names the
/// module of the tenant table `$tenant` or of the platform table
/// `$platform` (same column names), `$rows` is that table narrowed to the
/// owner (a tenant's: `tenant_id = …`). The body is compiled once per table.
macro_rules! by_owner {
    ($owner:expr, $tenant:ident | $platform:ident, |$t:ident, $rows:ident| $body:expr) => {
        match $owner {
            $crate::console::owner::Owner::Tenant(tenant_id) => {
                use $crate::db::schema::$tenant as $t;
                #[allow(unused_variables)]
                let $rows = $t::table.filter($t::tenant_id.eq(tenant_id));
                $body
            }
            $crate::console::owner::Owner::Platform => {
                use $crate::db::schema::$platform as $t;
                #[allow(unused_variables)]
                let $rows = $t::table;
                $body
            }
        }
    };
}
pub(crate) use by_owner;

/// Inserts one row into `$tenant` (with the owner's `tenant_id`) or into its
/// `platform_` twin `$platform`: the other columns are the same in both.
macro_rules! insert_owned {
    ($conn:expr, $owner:expr, $tenant:ident | $platform:ident, { $($col:ident: $val:expr),+ $(,)? }) => {
        match $owner {
            $crate::console::owner::Owner::Tenant(tenant_id) => {
                use $crate::db::schema::$tenant as t;
                diesel::insert_into(t::table)
                    .values((t::tenant_id.eq(tenant_id), $(t::$col.eq($val)),+))
                    .execute($conn)
            }
            $crate::console::owner::Owner::Platform => {
                use $crate::db::schema::$platform as t;
                diesel::insert_into(t::table)
                    .values(($(t::$col.eq($val)),+))
                    .execute($conn)
            }
        }
    };
}
pub(crate) use insert_owned;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_owner_and_only_its_own_form_is_looked_up() {
        let tenant = Uuid::new_v4();
        let (t, hash) = new_token(Owner::Tenant(tenant));
        assert_eq!(
            locate(t.expose()),
            Some((Scope::Of(Owner::Tenant(tenant)), hash))
        );
        let (p, hash) = new_token(Owner::Platform);
        assert_eq!(locate(p.expose()), Some((Scope::Of(Owner::Platform), hash)));
        // A token from before the split: 43 characters, no owner.
        let (old, hash) = super::super::sessions::new_token();
        assert_eq!(locate(old.expose()), Some((Scope::Unnamed, hash)));
        for bad in ["", "x", "nope.abc", "p", &"a".repeat(129), "zz.x"] {
            assert_eq!(locate(bad), None, "{bad}");
        }
        let other = format!("{}.{}", "0".repeat(32), "x");
        assert!(matches!(
            locate(&other),
            Some((Scope::Of(Owner::Tenant(_)), _))
        ));
    }
}
