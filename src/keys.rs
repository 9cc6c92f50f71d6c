//! Minting, hashing and verifying secrets: gateway API keys and bearer tokens.
//!
//! Secrets are 256 random bits. Only their SHA-256 is stored, so a lookup is one
//! indexed equality on the hash and costs exactly one SHA-256 per request. A
//! slow password hash would add nothing here: the input already has full entropy.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Gateway API keys look like `sk-...`, which LLM clients and secret scanners expect.
pub const API_KEY_PREFIX: &str = "sk-";
/// Bearer tokens for SCIM, the sign-in hook and operators.
pub const TOKEN_PREFIX: &str = "scimsync_";
/// The furthest a new key's expiry may be (`key create --expires-in`): ten years.
pub const KEY_EXPIRY_LIMIT: crate::config::DurationLimit = crate::config::DurationLimit {
    max_secs: 3650 * 86_400,
    described: "10 years, 3650d",
};
/// How many leading characters of a key are kept visibly, to tell keys apart.
const VISIBLE_PREFIX_LEN: usize = 10;

/// A freshly minted secret. It is shown once; `Debug` never reveals it.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn mint(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

pub fn mint_api_key() -> Secret {
    mint(API_KEY_PREFIX)
}

pub fn mint_token() -> Secret {
    mint(TOKEN_PREFIX)
}

/// Hex SHA-256 of a presented secret: what the store indexes and compares.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    // Into a buffer of its own size at once: `hex::encode` goes a char at a time, which
    // showed in the profile of every authenticated request.
    let mut text = [0u8; 64];
    match hex::encode_to_slice(digest, &mut text) {
        Ok(()) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => hex::encode(digest),
    }
}

/// The part of a key shown in listings, e.g. `sk-AbCdEfG`.
pub fn visible_prefix(secret: &str) -> String {
    secret.chars().take(VISIBLE_PREFIX_LEN).collect()
}

/// Compares two hashes without an early exit, so timing says nothing about how much matched.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A presented bearer credential must look like one of ours before we spend a lookup on it.
pub fn is_well_formed(secret: &str, prefix: &str) -> bool {
    secret.len() <= 256
        && secret.starts_with(prefix)
        && secret[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && secret.len() > prefix.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_unique_well_formed_and_redacted_in_debug() {
        let a = mint_api_key();
        let b = mint_api_key();
        assert_ne!(a.expose(), b.expose());
        assert!(is_well_formed(a.expose(), API_KEY_PREFIX));
        assert_eq!(a.expose().len(), 3 + 43);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn hashing_is_stable_and_comparison_is_exact() {
        let h = hash_secret("sk-abc");
        assert_eq!(h, hash_secret("sk-abc"));
        // The lowercase hex of SHA-256, as stored by every earlier release.
        assert_eq!(
            h,
            "1460db1b6902f8b1fc2a40d9381a24d0fd22c3bc1b2c6f999c521da73776fbe0"
        );
        assert!(hashes_match(&h, &hash_secret("sk-abc")));
        assert!(!hashes_match(&h, &hash_secret("sk-abd")));
    }

    #[test]
    fn malformed_credentials_are_recognised_before_lookup() {
        assert!(!is_well_formed("sk-", API_KEY_PREFIX));
        assert!(!is_well_formed("Bearer sk-abc", API_KEY_PREFIX));
        assert!(!is_well_formed("sk-a b", API_KEY_PREFIX));
        assert!(!is_well_formed(
            &format!("sk-{}", "a".repeat(300)),
            API_KEY_PREFIX
        ));
        assert!(is_well_formed("scimsync_abc-_9", TOKEN_PREFIX));
    }
}
