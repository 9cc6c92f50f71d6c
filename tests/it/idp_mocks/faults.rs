//! A faulty upstream: a reverse proxy in front of any mock IdP that passes requests
//! through untouched, except those a rule matches, which it answers the way broken
//! networks and broken IdPs do: never, half, cut off, as an HTML page, as JSON of the
//! wrong shape, or with a storm of 5xx and 429.
//!
//! The proxy rewrites the mock's base URL to its own in every answer (bodies and
//! headers such as Okta's `Link`), so next-page links come back through it too.
//! Point a connector at it with [`FaultyUpstream::reroute`].

use super::serve;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Changes a JSON answer; gets the URL the client asked for (through the proxy).
pub type Rewrite = Arc<dyn Fn(&mut Value, &str) + Send + Sync>;

/// Changes an answer's headers (Okta's `Link`, OneLogin's `After-Cursor`); gets the URL
/// the client asked for (through the proxy).
pub type RewriteHeaders = Arc<dyn Fn(&mut axum::http::HeaderMap, &str) + Send + Sync>;

/// How a matched request is answered.
#[derive(Clone)]
pub enum Fault {
    /// The connection is accepted and the request read, but no answer ever comes.
    Hang,
    /// The real status line and headers, the first half of the body, then nothing.
    StallBody,
    /// The real answer cut in the middle; the Content-Length matches the cut, so the
    /// HTTP exchange is complete but the JSON is not.
    TruncatedJson,
    /// The real answer's Content-Length, half of its body, then the connection closes.
    ClosedMidBody,
    /// This status, headers and body instead of the real answer (an HTML error page
    /// with 200, a 503, a 429 with Retry-After, ...).
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        content_type: &'static str,
        body: String,
    },
    /// The real JSON answer, changed.
    Rewrite(Rewrite),
    /// The real answer with its headers changed (after the proxy put its own base URL
    /// in them).
    RewriteHeaders(RewriteHeaders),
}

impl Fault {
    /// A 200 whose body is `body` with the given content type.
    pub fn ok_body(content_type: &'static str, body: impl Into<String>) -> Self {
        Fault::Answer {
            status: 200,
            headers: Vec::new(),
            content_type,
            body: body.into(),
        }
    }

    /// The real JSON answer passed through `f`.
    pub fn rewrite(f: impl Fn(&mut Value, &str) + Send + Sync + 'static) -> Self {
        Fault::Rewrite(Arc::new(f))
    }

    /// The real answer with its headers passed through `f`.
    pub fn rewrite_headers(
        f: impl Fn(&mut axum::http::HeaderMap, &str) + Send + Sync + 'static,
    ) -> Self {
        Fault::RewriteHeaders(Arc::new(f))
    }

    /// An answer with `status`, a JSON body and extra headers (a storm, repeated).
    pub fn status(status: u16, headers: &[(&'static str, &str)], body: Value) -> Self {
        Fault::Answer {
            status,
            headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            content_type: "application/json",
            body: body.to_string(),
        }
    }
}

struct Rule {
    /// Requests whose path and query contain this.
    fragment: String,
    fault: Fault,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    own: Arc<Mutex<String>>,
    rules: Arc<Mutex<Vec<Rule>>>,
    log: Arc<Mutex<Vec<String>>>,
    faulted: Arc<AtomicUsize>,
    http: reqwest::Client,
}

/// A proxy in front of one mock.
pub struct FaultyUpstream {
    pub base_url: String,
    upstream: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    log: Arc<Mutex<Vec<String>>>,
    faulted: Arc<AtomicUsize>,
}

impl FaultyUpstream {
    /// A proxy for the mock at `upstream` (its base URL, e.g. `http://127.0.0.1:4711`).
    pub async fn start(upstream: &str) -> Self {
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            own: Arc::default(),
            rules: Arc::default(),
            log: Arc::default(),
            faulted: Arc::default(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("proxy client"),
        };
        let router = Router::new().fallback(forward).with_state(proxy.clone());
        let (_, base_url) = serve(router).await;
        *proxy.own.lock().unwrap() = base_url.clone();
        Self {
            base_url,
            upstream: proxy.upstream,
            rules: proxy.rules,
            log: proxy.log,
            faulted: proxy.faulted,
        }
    }

    /// Sends a connector's API calls (and, where they share the base, token requests)
    /// through the proxy: every URL in the config that starts at the mock.
    pub fn reroute(&self, config: &mut scimsync::config::IdpConfig) {
        for url in [
            &mut config.api_base_url,
            &mut config.server_url,
            &mut config.token_url,
        ]
        .into_iter()
        .flatten()
        {
            *url = url.replace(&self.upstream, &self.base_url);
        }
    }

    /// From now on, requests whose path and query contain `fragment` get `fault`
    /// (on top of the rules already there; the first matching rule wins).
    pub fn inject(&self, fragment: &str, fault: Fault) {
        self.rules.lock().unwrap().push(Rule {
            fragment: fragment.to_owned(),
            fault,
        });
    }

    /// The IdP recovers: every request passes through again.
    pub fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// Requests whose path and query contain `fragment`, faulted or not.
    pub fn requests_to(&self, fragment: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(fragment))
            .count()
    }

    pub fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Every path and query the proxy saw, in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many answers were faulty.
    pub fn faulted(&self) -> usize {
        self.faulted.load(Ordering::SeqCst)
    }
}

fn bad_gateway(message: String) -> Response {
    (StatusCode::BAD_GATEWAY, message).into_response()
}

/// Headers that describe the framing of one hop, not the answer.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
    )
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    proxy.log.lock().unwrap().push(path_and_query.clone());
    let fault = proxy
        .rules
        .lock()
        .unwrap()
        .iter()
        .find(|r| path_and_query.contains(&r.fragment))
        .map(|r| r.fault.clone());
    let own = proxy.own.lock().unwrap().clone();
    if let Some(fault) = &fault {
        proxy.faulted.fetch_add(1, Ordering::SeqCst);
        match fault {
            Fault::Hang => std::future::pending::<()>().await,
            Fault::Answer {
                status,
                headers,
                content_type,
                body,
            } => {
                let mut response = Response::new(Body::from(body.clone()));
                *response.status_mut() = StatusCode::from_u16(*status).expect("a status code");
                let h = response.headers_mut();
                h.insert("content-type", HeaderValue::from_static(content_type));
                for (name, value) in headers {
                    h.insert(*name, HeaderValue::from_str(value).expect("a header value"));
                }
                return response;
            }
            _ => {}
        }
    }

    // Pass the request on to the mock.
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return bad_gateway("cannot read the request body".into());
    };
    let mut upstream = proxy.http.request(
        parts.method.clone(),
        format!("{}{path_and_query}", proxy.upstream),
    );
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.body(body).send().await {
        Ok(a) => a,
        Err(e) => return bad_gateway(format!("upstream: {e}")),
    };
    let status = answer.status();
    // Rebuilt pair by pair: a name may repeat (Okta sends one `Link` per relation).
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in answer.headers() {
        if hop_by_hop(name) {
            continue;
        }
        let value = match value.to_str() {
            Ok(v) if v.contains(&proxy.upstream) => {
                HeaderValue::from_str(&v.replace(&proxy.upstream, &own)).expect("header")
            }
            _ => value.clone(),
        };
        headers.append(name.clone(), value);
    }
    let Ok(bytes) = answer.bytes().await else {
        return bad_gateway("upstream body".into());
    };
    // The mock's links lead back through the proxy.
    let text = String::from_utf8_lossy(&bytes).replace(&proxy.upstream, &own);
    let respond = |body: Body| {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers.clone();
        response
    };
    let half = |text: &str| -> Bytes {
        let cut = text.len() / 2;
        Bytes::copy_from_slice(&text.as_bytes()[..cut])
    };
    match fault {
        None => respond(Body::from(text)),
        Some(Fault::StallBody) => {
            let first = futures::stream::once(async move { Ok::<_, std::io::Error>(half(&text)) });
            respond(Body::from_stream(futures::StreamExt::chain(
                first,
                futures::stream::pending(),
            )))
        }
        Some(Fault::TruncatedJson) => respond(Body::from(half(&text))),
        Some(Fault::ClosedMidBody) => {
            let full = text.len();
            let first = half(&text);
            // The head and the first half go out; a moment later the connection drops.
            let first = futures::stream::once(async move { Ok(first) });
            let drop = futures::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the proxy drops the connection mid-body",
                ))
            });
            let chunks = futures::StreamExt::chain(first, drop);
            let mut response = respond(Body::from_stream(chunks));
            response
                .headers_mut()
                .insert("content-length", HeaderValue::from(full));
            response
        }
        Some(Fault::Rewrite(f)) => {
            let Ok(mut value) = serde_json::from_str::<Value>(&text) else {
                return bad_gateway("the mock's answer is not JSON".into());
            };
            f(&mut value, &format!("{own}{path_and_query}"));
            respond(Body::from(value.to_string()))
        }
        Some(Fault::RewriteHeaders(f)) => {
            let mut response = respond(Body::from(text));
            f(response.headers_mut(), &format!("{own}{path_and_query}"));
            response
        }
        Some(Fault::Hang) | Some(Fault::Answer { .. }) => unreachable!("answered above"),
    }
}
