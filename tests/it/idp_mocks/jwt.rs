//! Throwaway signing keys (generated per test run, never committed), a JWKS endpoint,
//! and id_tokens signed like an IdP would sign them.

use super::serve;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub struct TestKey {
    pub kid: String,
    pub pem: String,
    pub n: String,
    pub e: String,
}

pub fn generate(kid: &str) -> TestKey {
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key generated");
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    TestKey {
        kid: kid.to_owned(),
        pem: key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PEM encoded")
            .to_string(),
        n: b64(key.n().to_bytes_be()),
        e: b64(key.e().to_bytes_be()),
    }
}

/// The IdP's signing key.
pub fn idp_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| generate("idp-key-1"))
}

/// The key the IdP signs with after rotating away from [`idp_key`].
pub fn rotated_idp_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| generate("idp-key-2"))
}

/// A key the IdP does not publish (an attacker's), with the same kid.
pub fn rogue_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| generate("idp-key-1"))
}

pub fn jwk(key: &TestKey) -> Value {
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": key.kid, "n": key.n, "e": key.e})
}

/// Serves `{"keys": [...]}` at /keys; returns (URL, fetch counter).
pub async fn serve_jwks(keys: Vec<Value>) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let body = json!({"keys": keys});
    let router = Router::new().route(
        "/keys",
        get(move || {
            let body = body.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Json(body) }
        }),
    );
    let (_, base) = serve(router).await;
    (format!("{base}/keys"), fetches)
}

/// A JWKS endpoint whose keys can be replaced, as an IdP replaces them when it rotates
/// its signing key.
pub struct RotatingJwks {
    pub url: String,
    pub keys: Arc<Mutex<Vec<Value>>>,
    pub fetches: Arc<AtomicUsize>,
}

impl RotatingJwks {
    pub fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Serves `{"keys": [...]}` at /keys, the keys replaceable.
pub async fn serve_rotating_jwks(keys: Vec<Value>) -> RotatingJwks {
    let fetches = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(Mutex::new(keys));
    let (counter, served) = (fetches.clone(), keys.clone());
    let router = Router::new().route(
        "/keys",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let current = served.lock().unwrap().clone();
            let body = json!({"keys": current});
            async move { Json(body) }
        }),
    );
    let (_, base) = serve(router).await;
    RotatingJwks {
        url: format!("{base}/keys"),
        keys,
        fetches,
    }
}

/// Signs `claims` with RS256 under `key`.
pub fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(key.pem.as_bytes()).expect("key");
    jsonwebtoken::encode(&header, claims, &encoding).expect("signed")
}

/// Signs `claims` with HS256 and a shared secret (which an IdP token never uses).
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(idp_key().kid.clone());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("signed")
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
