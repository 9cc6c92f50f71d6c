//! The /scim/v2 router and its extractors. Handlers here are
//! thin: extract, call users/groups/bulk, render.

use super::list::{list_response, ListParams, Projection};
use super::response::{answer_key, answered, scim_json, to_body, IfNoneMatch, Written};
use super::{bulk, discovery, groups, users};
use crate::auth::{Authorized, ScimScope};
use crate::error::ApiError;
use crate::reconcile::Actor;
use crate::state::AppState;
use crate::store::Answer;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use futures::StreamExt;
use serde_json::Value;

/// Where the SCIM API is served.
pub const BASE: &str = "/scim/v2";

/// A path under [`BASE`], as the literal a route needs.
macro_rules! at_base {
    ($path:literal) => {
        concat!("/scim/v2", $path)
    };
}

/// The SCIM routes, with their full paths: merged into the application's router
/// rather than nested under [`BASE`], since a nested route rewrites every request's
/// URI to strip the prefix (an allocation and a parse on each, seen in the profile of a
/// cached GET).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            at_base!("/Users"),
            get(list_users)
                .post(create_user)
                .fallback(method_not_allowed),
        )
        .route(
            at_base!("/Users/.search"),
            post(search_users).fallback(method_not_allowed),
        )
        .route(
            at_base!("/Users/{id}"),
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user)
                .fallback(method_not_allowed),
        )
        .route(
            at_base!("/Groups"),
            get(list_groups)
                .post(create_group)
                .fallback(method_not_allowed),
        )
        .route(
            at_base!("/Groups/.search"),
            post(search_groups).fallback(method_not_allowed),
        )
        .route(
            at_base!("/Groups/{id}"),
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group)
                .fallback(method_not_allowed),
        )
        .route(
            at_base!("/.search"),
            post(search_all).fallback(method_not_allowed),
        )
        .route(
            at_base!("/Bulk"),
            post(bulk_request).fallback(method_not_allowed),
        )
        .route(
            at_base!("/ServiceProviderConfig"),
            read_only(get(service_provider_config)),
        )
        .route(at_base!("/ResourceTypes"), read_only(get(resource_types)))
        .route(
            at_base!("/ResourceTypes/{id}"),
            read_only(get(resource_type)),
        )
        .route(at_base!("/Schemas"), read_only(get(schemas)))
        .route(at_base!("/Schemas/{id}"), read_only(get(schema)))
}

/// The SCIM operation a request is, by resource and kind, for
/// `scimsync_scim_operations_total` (a bounded label set derived from the route
/// template and method, never from ids); `None` outside /scim/v2. The request
/// middleware counts only requests whose token was accepted: refusals (401, 403, 429)
/// are in `scimsync_http_requests_total` by status, and counting them here would let
/// anyone without a token inflate the figure.
pub fn operation_of(route: &str, method: &str) -> Option<(&'static str, &'static str)> {
    if !route.starts_with(BASE) {
        return None;
    }
    let resource = if route.contains("/Users") {
        "User"
    } else if route.contains("/Groups") {
        "Group"
    } else if route.ends_with("/Bulk") {
        "Bulk"
    } else if route.ends_with("/.search") {
        "Any"
    } else {
        "Discovery"
    };
    let one = route.ends_with("{id}");
    let kind = match (method, one) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) if route.ends_with(".search") => "search",
        ("POST", _) if resource == "Bulk" => "bulk",
        ("POST", _) => "create",
        ("PUT", _) => "replace",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    Some((resource, kind))
}

fn read_only(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(method_not_allowed)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not support that HTTP method",
    )
}

// ---------------------------------------------------------------------------
// Extractors

/// The URL clients reach /scim/v2 at, for `meta.location`, `Location` and `$ref`:
/// `[server] public_url` when set, else the request's Host.
#[derive(Debug, Clone)]
pub struct Base(pub String);

impl FromRequestParts<AppState> for Base {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(public) = &state.config.server.public_url {
            return Ok(Base(format!("{}/scim/v2", public.trim_end_matches('/'))));
        }
        let header_text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let host = header_text("host")
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| state.config.server.listen.to_string());
        let scheme = match header_text("x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        Ok(Base(format!("{scheme}://{host}/scim/v2")))
    }
}

/// The query string as (name, value) pairs, `+` decoded as a space (Entra), empty
/// pairs from a trailing `&` (OneLogin) dropped.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    fn from_uri(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
        Ok(
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                .map_err(|_| {
                    ApiError::bad_request(
                        crate::error::ScimType::InvalidValue,
                        "the query string is malformed",
                    )
                })?
                .0
                .into_iter()
                .filter(|(k, _)| !k.is_empty())
                .collect(),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(Params(Params::from_uri(&parts.uri)?))
    }
}

/// A JSON request body: `application/scim+json`, `application/json` or no content
/// type at all (some IdP clients omit it). Malformed JSON is 400 invalidSyntax, a
/// body over `[server] max_body_bytes` is 413, both in the SCIM envelope.
#[derive(Debug, Clone)]
pub struct ScimBody(pub Value);

impl FromRequest<AppState> for ScimBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.server.max_body_bytes;
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let text = content_type.to_str().unwrap_or_default();
            let essence = text
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !(essence.is_empty() || essence == "application/json" || essence.ends_with("+json"))
            {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("content type {essence:?} is not accepted; send application/scim+json"),
                ));
            }
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::too_large(format!(
                "the request body is larger than {limit} bytes"
            )));
        }
        let mut stream = request.into_body().into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|_| ApiError::invalid_syntax("the request body could not be read"))?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::too_large(format!(
                    "the request body is larger than {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid_syntax("a JSON request body is required"));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::invalid_syntax(format!(
                "the request body is not valid JSON: {} at line {}, column {}",
                json_error_kind(&e),
                e.line(),
                e.column()
            ))
        })?;
        Ok(ScimBody(value))
    }
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "it ends too early",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    }
}

/// The actor of a SCIM request: its token's name (for the audit log) and the IdP the
/// token pushes for (whose objects its writes own and may change).
pub fn actor(auth: &Authorized<ScimScope>) -> Actor {
    Actor::scim_token(auth.token.name.clone(), auth.token.idp.clone())
}

/// The value of `If-Match`, if sent.
pub fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// GET of one resource: 304 when If-None-Match names the current version.
fn read_response(
    written: Written,
    if_none_match: &IfNoneMatch,
    projection: &Projection,
) -> Response {
    answered(written.into_answer(projection), if_none_match)
}

// ---------------------------------------------------------------------------
// Users

/// Lists and GETs of users are answered from the read cache while nothing changed since
/// the same URL was answered: the whole body, rendered and serialised once.
async fn list_users(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    uri: Uri,
) -> Result<Response, ApiError> {
    let render = async {
        let params = ListParams::from_query(&Params::from_uri(&uri)?)?;
        let (total, resources) = users::list(&state, &base, &params).await?;
        Ok::<_, ApiError>(Answer {
            body: to_body(&list_response(total, params.start_index, resources)),
            version: None,
        })
    };
    let key = answer_key(b"Users", &base, &uri);
    let answer = state.store.answer(auth.ticket, &key, render).await?;
    Ok(answered(answer, &IfNoneMatch::default()))
}

async fn search_users(
    State(state): State<AppState>,
    _auth: Authorized<ScimScope>,
    Base(base): Base,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let params = ListParams::from_search(&body)?;
    let (total, resources) = users::list(&state, &base, &params).await?;
    Ok(scim_json(
        StatusCode::OK,
        &list_response(total, params.start_index, resources),
    ))
}

async fn get_user(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    Path(id): Path<String>,
    uri: Uri,
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    let render = async {
        let projection = Projection::from_query(&Params::from_uri(&uri)?)?;
        let written = users::get(&state, &base, &id, &projection).await?;
        Ok::<_, ApiError>(written.into_answer(&projection))
    };
    let key = answer_key(b"User", &base, &uri);
    let answer = state.store.answer(auth.ticket, &key, render).await?;
    Ok(answered(answer, &if_none_match))
}

async fn create_user(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let projection = Projection::from_query(&params)?;
    let written = users::create(&state, &actor(&auth), &base, &body).await?;
    Ok(written.into_response(&projection))
}

async fn replace_user(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let projection = Projection::from_query(&params)?;
    let written = users::replace(
        &state,
        &actor(&auth),
        &base,
        &id,
        &body,
        if_match(&headers).as_deref(),
    )
    .await?;
    Ok(written.into_response(&projection))
}

async fn patch_user(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let projection = Projection::from_query(&params)?;
    let written = users::patch(
        &state,
        &actor(&auth),
        &base,
        &id,
        &body,
        if_match(&headers).as_deref(),
    )
    .await?;
    Ok(written.into_response(&projection))
}

async fn delete_user(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let written = users::delete(&state, &actor(&auth), &id, if_match(&headers).as_deref()).await?;
    Ok(written.into_response(&Projection::default()))
}

// ---------------------------------------------------------------------------
// Groups

async fn list_groups(
    State(state): State<AppState>,
    _auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
) -> Result<Response, ApiError> {
    let params = ListParams::from_query(&params)?;
    let (total, resources) = groups::list(&state, &base, &params).await?;
    Ok(scim_json(
        StatusCode::OK,
        &list_response(total, params.start_index, resources),
    ))
}

async fn search_groups(
    State(state): State<AppState>,
    _auth: Authorized<ScimScope>,
    Base(base): Base,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let params = ListParams::from_search(&body)?;
    let (total, resources) = groups::list(&state, &base, &params).await?;
    Ok(scim_json(
        StatusCode::OK,
        &list_response(total, params.start_index, resources),
    ))
}

async fn get_group(
    State(state): State<AppState>,
    _auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
    Path(id): Path<String>,
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    let projection = Projection::from_query(&params)?;
    let written = groups::get(&state, &base, &id, &projection).await?;
    Ok(read_response(written, &if_none_match, &projection))
}

async fn create_group(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let projection = Projection::from_query(&params)?;
    let written = groups::create(&state, &actor(&auth), &base, &body, &projection).await?;
    Ok(written.into_response(&projection))
}

async fn replace_group(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let projection = Projection::from_query(&params)?;
    let written = groups::replace(
        &state,
        &actor(&auth),
        &base,
        &id,
        &body,
        if_match(&headers).as_deref(),
        &projection,
    )
    .await?;
    Ok(written.into_response(&projection))
}

async fn patch_group(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    Params(params): Params,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let projection = Projection::from_query(&params)?;
    let written = groups::patch(
        &state,
        &actor(&auth),
        &base,
        &id,
        &body,
        if_match(&headers).as_deref(),
        &projection,
    )
    .await?;
    Ok(written.into_response(&projection))
}

async fn delete_group(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let written = groups::delete(&state, &actor(&auth), &id, if_match(&headers).as_deref()).await?;
    Ok(written.into_response(&Projection::default()))
}

// ---------------------------------------------------------------------------
// Root search and bulk

/// POST /.search: users first, then groups, paged over the concatenation.
async fn search_all(
    State(state): State<AppState>,
    _auth: Authorized<ScimScope>,
    Base(base): Base,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let params = ListParams::from_search(&body)?;
    let (user_total, mut resources) = users::list(&state, &base, &params).await?;
    let mut group_params = params.clone();
    let offset = params.start_index - 1;
    group_params.start_index = offset.saturating_sub(user_total) + 1;
    group_params.count = params.count.saturating_sub(resources.len() as u64);
    let (group_total, groups) = groups::list(&state, &base, &group_params).await?;
    resources.extend(groups);
    Ok(scim_json(
        StatusCode::OK,
        &list_response(user_total + group_total, params.start_index, resources),
    ))
}

async fn bulk_request(
    State(state): State<AppState>,
    auth: Authorized<ScimScope>,
    Base(base): Base,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let response = bulk::run(&state, &actor(&auth), &base, &body).await?;
    Ok(scim_json(StatusCode::OK, &response))
}

// ---------------------------------------------------------------------------
// Discovery

async fn service_provider_config(State(state): State<AppState>, Base(base): Base) -> Response {
    scim_json(
        StatusCode::OK,
        &discovery::service_provider_config(&base, state.config.server.max_body_bytes),
    )
}

async fn resource_types(Base(base): Base) -> Response {
    scim_json(
        StatusCode::OK,
        &discovery::list(discovery::resource_types(&base)),
    )
}

async fn resource_type(Base(base): Base, Path(id): Path<String>) -> Result<Response, ApiError> {
    let found = discovery::resource_type(&base, &id)
        .ok_or_else(|| ApiError::not_found(format!("resource type {id:?} not found")))?;
    Ok(scim_json(StatusCode::OK, &found))
}

async fn schemas(Base(base): Base) -> Response {
    scim_json(StatusCode::OK, &discovery::list(discovery::schemas(&base)))
}

async fn schema(Base(base): Base, Path(id): Path<String>) -> Result<Response, ApiError> {
    let found = discovery::schema(&base, &id)
        .ok_or_else(|| ApiError::not_found(format!("schema {id:?} not found")))?;
    Ok(scim_json(StatusCode::OK, &found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_literals_are_under_the_base_the_rest_of_the_code_names() {
        assert_eq!(at_base!(""), BASE);
    }

    #[test]
    fn operations_are_named_by_route_template_and_method_and_only_under_the_base() {
        assert_eq!(
            operation_of("/scim/v2/Users/{id}", "GET"),
            Some(("User", "get"))
        );
        assert_eq!(
            operation_of("/scim/v2/Groups/{id}", "PATCH"),
            Some(("Group", "patch"))
        );
        assert_eq!(
            operation_of("/scim/v2/Users/.search", "POST"),
            Some(("User", "search"))
        );
        assert_eq!(
            operation_of("/scim/v2/Bulk", "POST"),
            Some(("Bulk", "bulk"))
        );
        assert_eq!(
            operation_of("/scim/v2/Schemas", "GET"),
            Some(("Discovery", "list"))
        );
        assert_eq!(operation_of("/v1/whoami", "GET"), None);
        assert_eq!(operation_of("<unmatched>", "GET"), None);
    }
}
