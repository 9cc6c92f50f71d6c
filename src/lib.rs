//! scimsync keeps an LLM gateway's users, teams, memberships and API keys in line
//! with an identity provider. See DESIGN.md for the shape of the whole.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod idp;
pub mod keys;
mod listener;
pub mod maintenance;
pub mod metrics;
pub mod output;
pub mod reconcile;
pub mod scim;
pub mod sso;
pub mod state;
pub mod store;
pub mod sync;
pub mod target;
pub mod telemetry;
pub mod ui;
