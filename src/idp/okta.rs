//! Okta connector (to be written).

use super::{Connector, IdpError, IdpGroup, IdpUser, PullStats};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use std::sync::Arc;

pub struct Okta;

impl Okta {
    pub fn new(config: &IdpConfig) -> Result<Self, IdpError> {
        Err(IdpError::Config {
            idp: config.name.clone(),
            message: "this kind of IdP is not supported yet".into(),
        })
    }
}

impl Connector for Okta {
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn group_members<'a>(
        &'a self,
        _group: &'a IdpGroup,
        _all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>> {
        Box::pin(async move { Err(IdpError::UserNotFound(user.to_owned())) })
    }
    fn user_groups<'a>(
        &'a self,
        _user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn stats(&self) -> Arc<PullStats> {
        Arc::default()
    }
}
