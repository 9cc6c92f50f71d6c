//! SCIM setup: the tenant URL, SCIM tokens (created here and shown once; listed and
//! revoked), and what to enter on the IdP's side.

use super::layout::{self, Section};
use super::session::Admin;
use super::{UiError, UiResult, BASE};
use crate::domain::TokenScope;
use crate::state::AppState;
use crate::store::StoreError;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
pub struct SetupQuery {
    revoked: Option<String>,
}

/// Where an IdP reaches the SCIM API: from `public_url`, else from this request.
fn tenant_url(state: &AppState, headers: &HeaderMap) -> String {
    let config = state.current_config();
    let base = match config.server.public_url.as_deref() {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    format!("{base}/scim/v2")
}

pub async fn page(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Query(q): Query<SetupQuery>,
) -> UiResult<Markup> {
    let notice = q.revoked.map(|name| format!("Token {name:?} is revoked."));
    render(&state, &admin, &headers, notice.as_deref(), None).await
}

/// The page; `created` is a token just made: (name, secret), shown this once.
async fn render(
    state: &AppState,
    admin: &Admin,
    headers: &HeaderMap,
    notice: Option<&str>,
    created: Option<(&str, &str)>,
) -> UiResult<Markup> {
    let tokens = state.store.list_tokens().await?;
    let config = state.current_config();
    let url = tenant_url(state, headers);
    let idps: Vec<&str> = config.idp.iter().map(|i| i.name.as_str()).collect();
    let body = html! {
        h1 { "SCIM setup" }
        (layout::notice(notice))
        @if let Some((name, secret)) = created {
            section.created aria-labelledby="created-title" {
                h2 id="created-title" { "Token " (name) " created" }
                p { "Copy it now and paste it into the IdP as the secret token. "
                    strong { "It is not shown again" } "; only its hash is kept." }
                label for="new-token" { "New SCIM token" }
                div.copy-row {
                    input type="text" id="new-token" readonly value=(secret) spellcheck="false";
                    button type="button" data-copy="new-token" hidden { "Copy" }
                }
            }
        }
        section aria-labelledby="tenant-title" {
            h2 id="tenant-title" { "Tenant URL" }
            label for="tenant-url" { "SCIM base URL for the IdP" }
            div.copy-row {
                input type="text" id="tenant-url" readonly value=(url);
                button type="button" data-copy="tenant-url" hidden { "Copy" }
            }
            @if config.server.public_url.is_none() {
                p.help { "Taken from this request. Set " code { "[server] public_url" }
                    " to the address the IdP reaches scimsync at." }
            }
        }
        section aria-labelledby="tokens-title" {
            h2 id="tokens-title" { "Tokens" }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Scope" } th scope="col" { "IdP" }
                        th scope="col" { "Created" } th scope="col" { "Last request" } th scope="col" { "State" } th scope="col" { span.visually-hidden { "Action" } } } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td { (t.name) }
                                td { (t.scope) }
                                td { @if t.scope == TokenScope::Scim { (t.idp) } }
                                td { (layout::when(Some(t.created))) }
                                td { (layout::when(t.last_used)) }
                                td { @if let Some(at) = t.revoked { "revoked " (layout::when(Some(at))) } @else { "active" } }
                                td {
                                    @if t.revoked.is_none() && t.name != admin.token_name {
                                        form.inline method="post" action={(BASE) "/scim/tokens/revoke"} {
                                            (layout::csrf(admin))
                                            input type="hidden" name="name" value=(t.name);
                                            button.danger type="submit" aria-label={"Revoke token " (t.name)} { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.stacked method="post" action={(BASE) "/scim/tokens"} {
                h3 { "Create a SCIM token" }
                label for="token-name" { "Name" }
                input type="text" id="token-name" name="name" required maxlength="64"
                    pattern="[A-Za-z0-9._-]+" aria-describedby="token-name-help";
                p.help id="token-name-help" { "Letters, digits, dot, dash and underscore; e.g. entra-prod." }
                label for="token-idp" { "IdP it pushes for" }
                select id="token-idp" name="idp" {
                    option value=(crate::domain::DEFAULT_SCIM_IDP) { (crate::domain::DEFAULT_SCIM_IDP) }
                    @for idp in &idps { option value=(idp) { (idp) } }
                }
                (layout::csrf(admin))
                button type="submit" { "Create token" }
            }
        }
        section aria-labelledby="idp-title" {
            h2 id="idp-title" { "On the IdP's side" }
            h3 { "Microsoft Entra ID" }
            ol {
                li { "Enterprise applications → New application → Create your own application (non-gallery)." }
                li { "Provisioning → Get started → Provisioning Mode: Automatic." }
                li { "Tenant URL: " code { (url) } "; Secret Token: a token created above." }
                li { "Test Connection, then Save; under Mappings keep userPrincipalName → userName." }
                li { "Users and groups: assign the groups to provision; set Provisioning Status to On." }
            }
            h3 { "Okta" }
            ol {
                li { "Applications → Create App Integration → SAML 2.0 or OIDC app; then General → Provisioning: SCIM." }
                li { "Provisioning → Integration: SCIM connector base URL " code { (url) }
                    ", unique identifier field userName, authentication mode HTTP Header." }
                li { "Authorization: Bearer, a token created above. Test Connector Configuration, then Save." }
                li { "To App: enable Create Users, Update User Attributes and Deactivate Users." }
                li { "Push Groups: push the groups whose members should reach the gateway." }
            }
        }
    };
    Ok(layout::page(admin, Section::Scim, "SCIM setup", body))
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: String,
    idp: String,
}

/// Creates a SCIM token and shows it, this once, on the page the POST returns.
pub async fn create_token(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(form): Form<CreateForm>,
) -> UiResult<Response> {
    let name = form.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(UiError::BadRequest(
            "a token name is 1 to 64 letters, digits, dots, dashes or underscores".into(),
        ));
    }
    let idp = form.idp.trim();
    crate::domain::check_idp_name(idp).map_err(|e| UiError::BadRequest(e.to_string()))?;
    let secret = match state
        .store
        .issue_token_audited(name, TokenScope::Scim, idp, &admin.token_name)
        .await
    {
        Ok(secret) => secret,
        Err(StoreError::Conflict(_)) => {
            return Err(UiError::BadRequest(format!(
                "a token named {name:?} already exists (revoked tokens keep their names)"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(admin = %admin.token_name, token = %name, "console: SCIM token created");
    let page = render(
        &state,
        &admin,
        &headers,
        None,
        Some((name, secret.expose())),
    )
    .await?;
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct RevokeForm {
    name: String,
}

pub async fn revoke_token(
    State(state): State<AppState>,
    admin: Admin,
    Form(form): Form<RevokeForm>,
) -> UiResult<Response> {
    if form.name == admin.token_name {
        return Err(UiError::BadRequest(
            "this session's own token cannot be revoked from it; use another admin token or the CLI"
                .into(),
        ));
    }
    if !state
        .store
        .revoke_token_audited(&form.name, &admin.token_name)
        .await?
    {
        return Err(UiError::NotFound(format!(
            "no active token is named {:?}",
            form.name
        )));
    }
    tracing::info!(admin = %admin.token_name, token = %form.name, "console: token revoked");
    let target = format!(
        "{BASE}/scim?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("revoked", &form.name)
            .finish()
    );
    Ok(Redirect::to(&target).into_response())
}
