//! Lists and objects of request bodies, bounded while they are read (issue
//! 22, finding 11). A JSON item can be three bytes (`{},`) and the Rust
//! value it becomes a hundred times that, so a list that is only checked
//! for its length after parsing lets a body within `limits.max_request_bytes`
//! take many times its size in memory first. These readers refuse the item
//! past the bound, while reading, with a 422 naming the field; the checks
//! after parsing stay (they report every error of a message at once).
//!
//! Use them with `#[serde(default, deserialize_with = "...")]`:
//! `opt_vec::<_, _, 50>` for an optional list, `vec::<_, _, 100>` for a
//! required one, `opt_map::<_, _, 20>` for an optional object of strings to
//! `V`; a body that is itself a list is a [`List`].

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A list of at most `N` items.
pub fn vec<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(SeqAtMost::<T, N>(PhantomData))
}

/// An optional list of at most `N` items (`null` = absent).
pub fn opt_vec<'de, D, T, const N: usize>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<List<T, N>>::deserialize(d)?.map(|l| l.0))
}

/// An optional object of at most `N` entries (`null` = absent).
pub fn opt_map<'de, D, V, const N: usize>(d: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    Ok(Option::<Entries<V, N>>::deserialize(d)?.map(|e| e.0))
}

/// The error of an over-long list or object: serde_path_to_error puts the
/// field's path in front.
pub fn too_many<E: de::Error>(n: usize, what: &str) -> E {
    E::custom(format_args!("must have at most {n} {what}"))
}

/// A list of at most `N` items as a type, for a body that is a list.
pub struct List<T, const N: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for List<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        vec::<D, T, N>(d).map(List)
    }
}

struct SeqAtMost<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for SeqAtMost<T, N> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            if out.len() == N {
                return Err(too_many(N, "items"));
            }
            out.push(item);
        }
        Ok(out)
    }
}

struct Entries<V, const N: usize>(BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>, const N: usize> Deserialize<'de> for Entries<V, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MapAtMost::<V, N>(PhantomData))
            .map(Entries)
    }
}

struct MapAtMost<V, const N: usize>(PhantomData<V>);

impl<'de, V: Deserialize<'de>, const N: usize> Visitor<'de> for MapAtMost<V, N> {
    type Value = BTreeMap<String, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, V>()? {
            out.insert(k, v);
            if out.len() > N {
                return Err(too_many(N, "entries"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AppError;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "opt_vec::<_, _, 3>")]
        list: Option<Vec<u32>>,
        #[serde(default, deserialize_with = "opt_map::<_, _, 2>")]
        map: Option<BTreeMap<String, String>>,
    }

    fn field_error(body: &str) -> (String, String) {
        match crate::body::parse_json::<Body>(body.as_bytes()) {
            Err(AppError::Validation { errors, .. }) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn at_the_bound_is_read_and_one_more_is_refused_by_name() {
        let ok: Body =
            crate::body::parse_json(br#"{"list": [1, 2, 3], "map": {"a": "", "b": ""}}"#).unwrap();
        assert_eq!(ok.list.unwrap().len(), 3);
        assert_eq!(ok.map.unwrap().len(), 2);
        let none: Body = crate::body::parse_json(br#"{"list": null}"#).unwrap();
        assert!(none.list.is_none() && none.map.is_none());
        assert_eq!(
            field_error(r#"{"list": [1, 2, 3, 4]}"#),
            ("list".into(), "must have at most 3 items".into())
        );
        assert_eq!(
            field_error(r#"{"map": {"a": "", "b": "", "c": ""}}"#),
            ("map".into(), "must have at most 2 entries".into())
        );
        assert_eq!(
            field_error(r#"{"list": {}}"#),
            ("list".into(), "must be a list, not an object".into())
        );
        assert_eq!(
            field_error(r#"{"list": [1, "x"]}"#),
            (
                "list[1]".into(),
                "must be a whole number from 0 to 4294967295, not a string".into()
            )
        );
    }
}
