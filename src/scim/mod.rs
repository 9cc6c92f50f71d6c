//! The SCIM 2.0 listener (RFC 7643, RFC 7644) at /scim/v2: wire types, filters and
//! PATCH, and the handlers that turn each request into a desired-state change for
//! the reconcile engine. Nothing here speaks SQL.

pub mod attributes;
pub mod bulk;
pub mod discovery;
pub mod error;
pub mod filter;
pub mod groups;
pub mod list;
pub mod lower;
pub mod patch;
pub mod resources;
pub mod routes;
pub mod users;

pub use routes::router;

use crate::app::AppState;
use crate::error::ApiError;
use crate::reconcile::{reconcile_and_summarise, Actor, ApplySummary, Desired, Plan, Policy};
use crate::store::WriteTx;

/// Plans and applies one SCIM write inside `tx`, under the configuration in force
/// now, and commits it: the tail every write handler shares.
pub(crate) async fn apply_and_commit(
    mut tx: WriteTx,
    state: &AppState,
    desired: &Desired,
    actor: &Actor,
) -> Result<(Plan, ApplySummary), ApiError> {
    let policy = Policy::from_config(&state.current_config());
    let applied = reconcile_and_summarise(&mut tx, desired, &policy, actor).await?;
    tx.commit().await?;
    Ok(applied)
}
