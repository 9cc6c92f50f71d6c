use serde::{Deserialize, Serialize};
use std::fmt;

/// The IdP that SCIM tokens created without `--idp`, and everything pushed over SCIM
/// before tokens were bound to an IdP, belong to.
pub const DEFAULT_SCIM_IDP: &str = "default";

/// Who owns a user, team or membership, and how its data arrived. Ownership belongs
/// to an IdP whichever way its data arrives (a SCIM push with a token bound to that
/// IdP, a pull, a sign-in): an IdP changes and removes only what it owns, and nothing
/// provisioning does removes `Manual` data.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Source {
    /// Pushed over SCIM with a token bound to the named IdP.
    Scim(String),
    /// Created at an SSO sign-in through the named IdP connection.
    Sso(String),
    /// Pulled from the named IdP connection.
    Sync(String),
    /// Created by an operator.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?}: expected manual, scim:<idp>, sso:<idp> or sync:<idp>")]
pub struct SourceParseError(pub String);

impl Source {
    pub fn parse(s: &str) -> Result<Self, SourceParseError> {
        match s {
            // Written before SCIM tokens were bound to an IdP (and still in old saved plans).
            "scim" => Ok(Source::Scim(DEFAULT_SCIM_IDP.to_owned())),
            "manual" => Ok(Source::Manual),
            other => match other.split_once(':') {
                Some(("scim", idp)) if !idp.is_empty() => Ok(Source::Scim(idp.to_owned())),
                Some(("sso", idp)) if !idp.is_empty() => Ok(Source::Sso(idp.to_owned())),
                Some(("sync", idp)) if !idp.is_empty() => Ok(Source::Sync(idp.to_owned())),
                _ => Err(SourceParseError(s.to_owned())),
            },
        }
    }

    /// The IdP that owns what came from this source; `None` for manual data.
    pub fn idp(&self) -> Option<&str> {
        match self {
            Source::Scim(idp) | Source::Sso(idp) | Source::Sync(idp) => Some(idp),
            Source::Manual => None,
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, Source::Manual)
    }

    /// Whether the two sources belong to the same IdP (a pull, the sign-ins and the
    /// SCIM pushes of one IdP share what they own). Manual data belongs to no IdP.
    pub fn same_owner(&self, other: &Source) -> bool {
        match (self.idp(), other.idp()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// How an operator reads the owner: `IdP "entra"` or `an operator (manual)`.
    pub fn owner_label(&self) -> String {
        match self.idp() {
            Some(idp) => format!("IdP {idp:?} ({self})"),
            None => "an operator (manual)".to_owned(),
        }
    }
}

/// Checks a name an operator gives an IdP (`token create --idp`): it becomes part of the
/// owner text `scim:<idp>` in every row the token creates, so it is kept plain.
pub fn check_idp_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
        return Err(format!(
            "IdP name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.' \
             (the name of its [[idp]] table, if it has one)"
        ));
    }
    Ok(())
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Scim(idp) => write!(f, "scim:{idp}"),
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
    /// The admin console (src/ui), acting for a signed-in admin token.
    Ui,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scim => "scim",
            Trigger::Sso => "sso",
            Trigger::Sync => "sync",
            Trigger::Cli => "cli",
            Trigger::Ui => "ui",
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
        for s in ["scim:entra", "manual", "sso:entra", "sync:okta-prod"] {
            assert_eq!(Source::parse(s).unwrap().to_string(), s);
        }
        assert!(Source::parse("sync:").is_err());
        assert!(Source::parse("scim:").is_err());
        assert!(Source::parse("ldap").is_err());
    }

    #[test]
    fn unbound_scim_data_belongs_to_the_default_idp() {
        assert_eq!(
            Source::parse("scim").unwrap(),
            Source::Scim(DEFAULT_SCIM_IDP.into())
        );
    }

    #[test]
    fn an_idp_owns_what_it_pushed_pulled_and_signed_in_alike() {
        let push = Source::Scim("entra".into());
        let pull = Source::Sync("entra".into());
        let sign_in = Source::Sso("entra".into());
        assert!(push.same_owner(&pull) && pull.same_owner(&sign_in));
        assert!(!push.same_owner(&Source::Scim("okta".into())));
        assert!(!Source::Manual.same_owner(&Source::Manual));
    }
}
