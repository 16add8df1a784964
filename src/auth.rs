//! Finds the public key a request carries and checks it belongs to the
//! project in the path.
//!
//! The key comes from the `X-Sentry-Auth` header (also accepted as
//! `Authorization: Sentry ...`), the `sentry_key` query parameter, or the
//! envelope header's `dsn`. Several places may carry it (browser SDKs send
//! the query and the DSN), but they must agree.

use crate::config::Projects;

/// Why a request was not authorized: 401 when no usable key was given, 403
/// when a key was given but is not allowed here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No key in any of the places it may be.
    #[error(
        "missing public key (X-Sentry-Auth header, sentry_key query parameter or envelope dsn)"
    )]
    MissingKey,
    /// The auth header is not `Sentry key=value, ...`.
    #[error("malformed auth header: {0}")]
    MalformedHeader(&'static str),
    /// Two places carry different keys.
    #[error("the request carries two different public keys")]
    ConflictingKeys,
    /// The path names a project this relay does not serve.
    #[error("unknown project")]
    UnknownProject,
    /// The key belongs to no project.
    #[error("unknown public key")]
    UnknownKey,
    /// The key belongs to another project.
    #[error("the public key does not belong to this project")]
    WrongProject,
    /// The envelope's DSN names another project than the URL.
    #[error("the envelope's dsn is for project {0}, not this one")]
    DsnProject(u64),
}

impl AuthError {
    /// 401 for a missing or unreadable key, 403 for a key that is not allowed.
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            AuthError::MissingKey | AuthError::MalformedHeader(_) | AuthError::ConflictingKeys => {
                hyper::StatusCode::UNAUTHORIZED
            }
            AuthError::UnknownProject
            | AuthError::UnknownKey
            | AuthError::WrongProject
            | AuthError::DsnProject(_) => hyper::StatusCode::FORBIDDEN,
        }
    }
}

/// The key found in the request line and headers, before the body is read.
pub fn key_from_request(
    auth_header: Option<&str>,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<Option<String>, AuthError> {
    let mut found: Option<String> = None;
    // `Authorization` counts only when it is a Sentry one; other schemes
    // belong to proxies. With `X-Sentry-Auth` beside it, both must agree.
    let sentry_authorization = authorization.filter(|h| has_sentry_scheme(h));
    for h in [auth_header, sentry_authorization].into_iter().flatten() {
        if let Some(key) = key_from_auth_header(h)? {
            merge(&mut found, key)?;
        }
    }
    if let Some(q) = query {
        if let Some((_, key)) =
            form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "sentry_key")
        {
            merge(&mut found, key.into_owned())?;
        }
    }
    Ok(found)
}

/// The key in a DSN `scheme://KEY[:SECRET]@host/PROJECT_ID`.
pub fn key_from_dsn(dsn: &str) -> Option<String> {
    let rest = dsn.split_once("://")?.1;
    // The user info is in the authority, before the path: an `@` in the path is not it.
    let authority = rest.split('/').next()?;
    let userinfo = authority.split_once('@')?.0;
    let key = userinfo.split(':').next()?;
    (!key.is_empty()).then(|| key.to_owned())
}

/// The project a DSN names: the last segment of its path
/// (`scheme://KEY@host[:port][/path]/PROJECT_ID`), when it is a number.
pub fn project_from_dsn(dsn: &str) -> Option<u64> {
    let rest = dsn.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    path.trim_end_matches('/').rsplit('/').next()?.parse().ok()
}

/// Adds a key from one more place; a different key from another place is
/// refused. An empty key counts as no key.
pub fn merge(found: &mut Option<String>, key: String) -> Result<(), AuthError> {
    let key = key.trim().to_ascii_lowercase();
    if key.is_empty() {
        return Ok(());
    }
    match found {
        Some(existing) if *existing != key => Err(AuthError::ConflictingKeys),
        Some(_) => Ok(()),
        None => {
            *found = Some(key);
            Ok(())
        }
    }
}

fn has_sentry_scheme(value: &str) -> bool {
    value
        .trim_start()
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("sentry "))
}

/// Reads `Sentry sentry_version=7, sentry_client=x/1.0, sentry_key=KEY`.
fn key_from_auth_header(value: &str) -> Result<Option<String>, AuthError> {
    let value = value.trim();
    let pairs = if has_sentry_scheme(value) {
        &value[7..]
    } else {
        return Err(AuthError::MalformedHeader("expected the \"Sentry\" scheme"));
    };
    let mut key = None;
    for pair in pairs.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        // Pairs without `=` are skipped: the key is what matters.
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if name.trim() == "sentry_key" {
            key = Some(value.trim().trim_matches('"').to_owned());
        }
    }
    Ok(key)
}

/// Checks that `key` may send to `project_id`.
pub fn authorize(projects: &Projects, project_id: u64, key: &str) -> Result<(), AuthError> {
    if projects.get(project_id).is_none() {
        return Err(AuthError::UnknownProject);
    }
    match projects.project_of_key(key) {
        None => Err(AuthError::UnknownKey),
        Some(owner) if owner != project_id => Err(AuthError::WrongProject),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const OTHER: &str = "00000000000000000000000000000001";

    #[test]
    fn reads_the_sentry_auth_header() {
        let h =
            format!("Sentry sentry_version=7, sentry_client=sentry.rust/0.49.5, sentry_key={KEY}");
        assert_eq!(key_from_request(Some(&h), None, None), Ok(Some(KEY.into())));
        let lower = format!("sentry sentry_key={KEY},sentry_version=7");
        assert_eq!(
            key_from_request(Some(&lower), None, None),
            Ok(Some(KEY.into()))
        );
    }

    #[test]
    fn reads_authorization_only_with_the_sentry_scheme() {
        let h = format!("Sentry sentry_key={KEY}, sentry_version=7");
        assert_eq!(key_from_request(None, Some(&h), None), Ok(Some(KEY.into())));
        assert_eq!(key_from_request(None, Some("Bearer abc"), None), Ok(None));
    }

    #[test]
    fn reads_the_query_string() {
        let q = format!(
            "sentry_version=7&sentry_key={KEY}&sentry_client=sentry.javascript.browser%2F8.0.0"
        );
        assert_eq!(key_from_request(None, None, Some(&q)), Ok(Some(KEY.into())));
        assert_eq!(
            key_from_request(None, None, Some("sentry_version=7")),
            Ok(None)
        );
    }

    #[test]
    fn keys_from_two_places_must_agree() {
        let h = format!("Sentry sentry_key={KEY}");
        let same = format!("sentry_key={}", KEY.to_uppercase());
        assert_eq!(
            key_from_request(Some(&h), None, Some(&same)),
            Ok(Some(KEY.into()))
        );
        let other = format!("sentry_key={OTHER}");
        assert_eq!(
            key_from_request(Some(&h), None, Some(&other)),
            Err(AuthError::ConflictingKeys)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(
            key_from_request(Some("Basic abc"), None, None),
            Err(AuthError::MalformedHeader("expected the \"Sentry\" scheme"))
        );
        assert_eq!(
            key_from_request(Some("Sentry garbage"), None, None),
            Ok(None)
        );
        let h = format!("Sentry garbage, sentry_key={KEY}");
        assert_eq!(key_from_request(Some(&h), None, None), Ok(Some(KEY.into())));
        assert_eq!(
            key_from_request(Some("Sentry sentry_key="), None, Some("sentry_key=")),
            Ok(None)
        );
        assert_eq!(
            key_from_request(Some("Sentry sentry_version=7"), None, None),
            Ok(None)
        );
    }

    #[test]
    fn reads_dsns() {
        assert_eq!(
            key_from_dsn(&format!("https://{KEY}@o1.ingest.example.com/42")),
            Some(KEY.into())
        );
        assert_eq!(
            key_from_dsn(&format!("http://{KEY}:secret@relay:3000/42")),
            Some(KEY.into())
        );
        assert_eq!(key_from_dsn("http://relay:3000/42"), None);
        assert_eq!(key_from_dsn("not a dsn"), None);
        assert_eq!(key_from_dsn("http://relay:3000/path@x/42"), None);
    }

    #[test]
    fn authorizes_keys_per_project() {
        let config = Config::from_toml(&format!(
            "[[projects]]\nid = 42\npublic_keys = [\"{KEY}\"]\n[[projects]]\nid = 7\npublic_keys = [\"{OTHER}\"]\n"
        ))
        .unwrap();
        let p = &config.projects;
        assert_eq!(authorize(p, 42, KEY), Ok(()));
        assert_eq!(authorize(p, 7, KEY), Err(AuthError::WrongProject));
        assert_eq!(
            authorize(p, 42, "ffffffffffffffffffffffffffffffff"),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(authorize(p, 99, KEY), Err(AuthError::UnknownProject));
        assert_eq!(AuthError::MissingKey.status(), 401);
        assert_eq!(AuthError::WrongProject.status(), 403);
    }
}
