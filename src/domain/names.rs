use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} must not contain control characters")]
    ControlCharacter { what: &'static str },
    #[error("role {0:?} must be lowercase letters, digits, '_' or '-'")]
    BadRole(String),
}

const MAX_NAME_LEN: usize = 256;

fn parse_name(raw: &str, what: &'static str) -> Result<String, NameError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NameError::Empty { what });
    }
    let len = trimmed.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            len,
            max: MAX_NAME_LEN,
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter { what });
    }
    Ok(trimmed.to_owned())
}

/// A user's login name. Compared, hashed and ordered case-insensitively
/// (SCIM's userName has caseExact=false, and IdPs differ in how they case it),
/// but displayed exactly as it was given.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName {
    original: String,
    folded: String,
}

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let original = parse_name(raw, "userName")?;
        let folded = original.to_lowercase();
        Ok(Self { original, folded })
    }

    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The case-folded form, which is what the store's unique index holds.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl TryFrom<String> for UserName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserName> for String {
    fn from(value: UserName) -> Self {
        value.original
    }
}

impl PartialEq for UserName {
    fn eq(&self, other: &Self) -> bool {
        self.folded == other.folded
    }
}
impl Eq for UserName {}
impl Hash for UserName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.folded.hash(state)
    }
}
impl PartialOrd for UserName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for UserName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.folded.cmp(&other.folded)
    }
}
impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}
impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.original, f)
    }
}

/// A team's display name: trimmed, non-empty, bounded. Case is kept and matters
/// for display; matching by name is done case-insensitively by the callers that need it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TeamName(String);

impl TeamName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        parse_name(raw, "displayName").map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for TeamName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<TeamName> for String {
    fn from(value: TeamName) -> Self {
        value.0
    }
}
impl fmt::Display for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A gateway role such as `viewer` or `admin`. Roles are configuration, not an
/// enum: gateways name them differently (LiteLLM: `internal_user`, `proxy_admin`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(NameError::BadRole(raw.to_owned()))
        }
    }
    pub fn viewer() -> Self {
        Self("viewer".to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Role {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Role> for String {
    fn from(value: Role) -> Self {
        value.0
    }
}
impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_compare_case_insensitively_but_display_as_given() {
        let a = UserName::parse("Alice@Example.com").unwrap();
        let b = UserName::parse("alice@example.COM").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "Alice@Example.com");
        assert_eq!(a.folded(), "alice@example.com");
    }

    #[test]
    fn user_names_are_trimmed_and_must_not_be_empty() {
        assert_eq!(UserName::parse("  bob ").unwrap().as_str(), "bob");
        assert!(matches!(
            UserName::parse("   "),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            UserName::parse("a\u{0}b"),
            Err(NameError::ControlCharacter { .. })
        ));
        assert!(matches!(
            UserName::parse(&"x".repeat(300)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn roles_are_lowercase_identifiers() {
        assert!(Role::parse("internal_user").is_ok());
        assert!(Role::parse("Admin").is_err());
        assert!(Role::parse("").is_err());
        assert!(Role::parse("a b").is_err());
    }
}
