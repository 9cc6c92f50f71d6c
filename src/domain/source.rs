use serde::{Deserialize, Serialize};
use std::fmt;

/// Who owns a user, team or membership. A sync only changes what its own IdP owns,
/// and nothing provisioning does touches `Manual`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Source {
    /// Pushed over SCIM.
    Scim,
    /// Created at an SSO sign-in through the named IdP connection.
    Sso(String),
    /// Pulled from the named IdP connection.
    Sync(String),
    /// Created by an operator.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?}: expected scim, manual, sso:<idp> or sync:<idp>")]
pub struct SourceParseError(pub String);

impl Source {
    pub fn parse(s: &str) -> Result<Self, SourceParseError> {
        match s {
            "scim" => Ok(Source::Scim),
            "manual" => Ok(Source::Manual),
            other => match other.split_once(':') {
                Some(("sso", idp)) if !idp.is_empty() => Ok(Source::Sso(idp.to_owned())),
                Some(("sync", idp)) if !idp.is_empty() => Ok(Source::Sync(idp.to_owned())),
                _ => Err(SourceParseError(s.to_owned())),
            },
        }
    }

    /// The IdP connection behind a pull or sign-in source.
    pub fn idp(&self) -> Option<&str> {
        match self {
            Source::Sso(idp) | Source::Sync(idp) => Some(idp),
            Source::Scim | Source::Manual => None,
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, Source::Manual)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Scim => f.write_str("scim"),
            Source::Manual => f.write_str("manual"),
            Source::Sso(idp) => write!(f, "sso:{idp}"),
            Source::Sync(idp) => write!(f, "sync:{idp}"),
        }
    }
}
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl TryFrom<String> for Source {
    type Error = SourceParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Source> for String {
    fn from(value: Source) -> Self {
        value.to_string()
    }
}

/// What caused an applied operation; recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Scim,
    Sso,
    Sync,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scim => "scim",
            Trigger::Sso => "sso",
            Trigger::Sync => "sync",
            Trigger::Cli => "cli",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_their_text_form() {
        for s in ["scim", "manual", "sso:entra", "sync:okta-prod"] {
            assert_eq!(Source::parse(s).unwrap().to_string(), s);
        }
        assert!(Source::parse("sync:").is_err());
        assert!(Source::parse("ldap").is_err());
    }
}
