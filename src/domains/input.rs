//! Request bodies of the domain routes, parsed into domain values.

use serde::Deserialize;

use super::keys::Algorithm;
use crate::domain::parse_hostname;
use crate::error::{AppError, AppResult};

/// Longest domain name accepted: its DKIM record name
/// (`<selector>._domainkey.<name>`, selector ≤ 17 characters) must stay
/// within DNS's 253.
pub const MAX_NAME_LEN: usize = 220;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    /// e.g. `acme.com`
    pub name: String,
    pub dkim: Option<DkimOptions>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DkimOptions {
    /// `["rsa-sha256"]` (default) or `["rsa-sha256", "ed25519-sha256"]`.
    pub algorithms: Vec<String>,
}

impl CreateDomain {
    /// The lower-cased name and the key algorithms (RSA always first).
    pub fn parse(self) -> AppResult<(String, Vec<Algorithm>)> {
        let name = parse_name(&self.name)?;
        let algorithms = match self.dkim {
            None => vec![Algorithm::RsaSha256],
            Some(d) => parse_algorithms(&d.algorithms)?,
        };
        Ok((name, algorithms))
    }
}

pub fn parse_name(raw: &str) -> AppResult<String> {
    let name = parse_hostname("name", raw)?;
    if name.len() > MAX_NAME_LEN {
        return Err(AppError::invalid(
            "name",
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    let tld_ok = labels
        .last()
        .is_some_and(|t| t.bytes().any(|b| b.is_ascii_alphabetic()));
    if labels.len() < 2 || !tld_ok {
        return Err(AppError::invalid(
            "name",
            "must be a domain name with at least two labels (e.g. acme.com)",
        ));
    }
    Ok(name)
}

fn parse_algorithms(raw: &[String]) -> AppResult<Vec<Algorithm>> {
    let mut out = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let alg = Algorithm::parse(a).ok_or_else(|| {
            AppError::invalid(
                format!("dkim.algorithms[{i}]"),
                "must be rsa-sha256 or ed25519-sha256",
            )
        })?;
        if out.contains(&alg) {
            return Err(AppError::invalid(
                format!("dkim.algorithms[{i}]"),
                "is given twice",
            ));
        }
        out.push(alg);
    }
    if !out.contains(&Algorithm::RsaSha256) {
        // Ed25519 is a second signature: many receivers verify only RSA.
        return Err(AppError::invalid(
            "dkim.algorithms",
            "must include rsa-sha256 (ed25519-sha256 is an additional signature)",
        ));
    }
    out.sort_by_key(|a| *a != Algorithm::RsaSha256);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, algs: Option<Vec<&str>>) -> AppResult<(String, Vec<Algorithm>)> {
        CreateDomain {
            name: name.into(),
            dkim: algs.map(|a| DkimOptions {
                algorithms: a.into_iter().map(String::from).collect(),
            }),
        }
        .parse()
    }

    #[test]
    fn names_and_algorithms() {
        assert_eq!(parse("Acme.COM.", None).unwrap().0, "acme.com");
        assert!(parse("localhost", None).is_err());
        assert!(parse("1.2.3.4", None).is_err());
        assert!(parse("a_b.com", None).is_err());
        let long = format!("{}.com", vec!["a".repeat(63); 4].join(".")); // 259
        assert!(parse(&long, None).is_err());
        let both = parse("a.com", Some(vec!["ed25519-sha256", "rsa-sha256"]))
            .unwrap()
            .1;
        assert_eq!(both, vec![Algorithm::RsaSha256, Algorithm::Ed25519Sha256]);
        assert!(parse("a.com", Some(vec!["ed25519-sha256"])).is_err());
        assert!(parse("a.com", Some(vec![])).is_err());
        assert!(parse("a.com", Some(vec!["rsa-sha256", "rsa-sha256"])).is_err());
        assert!(parse("a.com", Some(vec!["rsa-sha1"])).is_err());
    }

    #[test]
    fn name_length_bound() {
        // 220 characters: labels of 63 + 63 + 63 + 27 ("...com" tail).
        let name = |len: usize| {
            let head = format!("{}.{}.{}.", "a".repeat(63), "b".repeat(63), "c".repeat(63));
            format!("{head}{}.com", "d".repeat(len - head.len() - 4))
        };
        assert_eq!(name(MAX_NAME_LEN).len(), MAX_NAME_LEN);
        assert!(parse_name(&name(MAX_NAME_LEN)).is_ok());
        assert!(parse_name(&name(MAX_NAME_LEN + 1)).is_err());
    }
}
