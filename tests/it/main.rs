//! The integration tests, as one test binary.
//!
//! Each file here used to be its own binary under tests/, and each linked the whole
//! dependency tree again: 33 binaries of ~270 MB that made a clean `cargo test` spend
//! most of its time in the linker and fill 11 GB of disk. As modules of one binary they
//! link once, share the harness in `common` and the IdP mocks in `idp_mocks`, and still
//! run in parallel. Run one area with a filter: `cargo test --test it crash::`.

mod common;
mod idp_mocks;

/// The fuzz targets' entry points, so the committed corpus replays in plain `cargo test`.
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_entries;

mod architecture;
mod auth_and_keys;
mod cli_output;
mod concurrency;
mod connections;
mod crash;
mod daemon;
mod fuzz_regressions;
mod group_commit;
mod hostile_input;
mod idp_auth0;
mod idp_faults;
mod idp_google;
mod idp_graph;
mod idp_graph_delta;
mod idp_keycloak;
mod idp_okta;
mod idp_onelogin;
mod idp_plan_cli;
mod idp_sync;
mod key_scope_and_limits;
mod litellm_bench;
mod litellm_fake;
mod litellm_target;
mod metrics_docs;
mod ownership;
mod quarantine;
mod read_cache;
mod reconcile_cli;
mod reconcile_engine;
mod reconcile_golden;
mod reconcile_scale;
mod replicas;
mod retention_backup;
mod scim_groups;
mod scim_idp_quirks;
mod scim_protocol;
mod scim_users;
mod security;
mod service;
mod sso_cli;
mod sso_sign_in;
mod ui_browser;
mod ui_http;
mod ui_plans;
mod unicode_names;
mod whoami_proxies;
mod write_transactions;
