use super::{
    format_ts, is_unique_violation, now, parse_ts, Store, StoreError, StoreResult, TokenCheck,
};
use crate::domain::{TokenInfo, TokenScope};
use crate::keys::hashes_match;
use sqlx::Row;

/// What a valid bearer token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrincipal {
    pub name: String,
    pub scope: TokenScope,
    /// The IdP a SCIM token pushes for: what it creates is owned by `scim:<idp>`, and
    /// it may change only what that IdP owns.
    pub idp: String,
}

fn corrupt(detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table: "scim_tokens",
        detail: detail.to_string(),
    }
}

impl Store {
    pub async fn create_token(
        &self,
        name: &str,
        scope: TokenScope,
        idp: &str,
        hash: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let result = sqlx::query(
            "INSERT INTO scim_tokens (name, scope, idp, hash, created) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name.to_owned())
        .bind(scope.as_str())
        .bind(idp.to_owned())
        .bind(hash.to_owned())
        .bind(format_ts(now()))
        .execute(tx.conn())
        .await;
        match result {
            Ok(_) => tx.commit().await,
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("a token named {name:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Mints a new bearer token and stores its hash. The returned secret is the only copy.
    pub async fn issue_token(
        &self,
        name: &str,
        scope: TokenScope,
        idp: &str,
    ) -> StoreResult<crate::keys::Secret> {
        let secret = crate::keys::mint_token();
        self.create_token(name, scope, idp, &crate::keys::hash_secret(secret.expose()))
            .await?;
        Ok(secret)
    }

    pub async fn token_count(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM scim_tokens")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT name, scope, idp, created, last_used, revoked FROM scim_tokens ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let scope: String = row.try_get("scope")?;
                let created: String = row.try_get("created")?;
                let last_used: Option<String> = row.try_get("last_used")?;
                let revoked: Option<String> = row.try_get("revoked")?;
                Ok(TokenInfo {
                    name: row.try_get("name")?,
                    scope: TokenScope::parse(&scope)
                        .ok_or_else(|| corrupt(format_args!("scope {scope:?}")))?,
                    idp: row.try_get("idp")?,
                    created: parse_ts("scim_tokens", &created)?,
                    last_used: last_used
                        .as_deref()
                        .map(|t| parse_ts("scim_tokens", t))
                        .transpose()?,
                    revoked: revoked
                        .as_deref()
                        .map(|t| parse_ts("scim_tokens", t))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// Revokes a token by name. Returns false when no unrevoked token has that name.
    pub async fn revoke_token(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("UPDATE scim_tokens SET revoked = $1 WHERE name = $2 AND revoked IS NULL")
                .bind(format_ts(now()))
                .bind(name.to_owned())
                .execute(tx.conn())
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Looks a presented token up by its hash; revoked tokens authenticate as nothing.
    /// A cached answer is only used while nothing was committed since it was read, so
    /// a revocation (from this process or from the CLI) takes effect at once.
    pub async fn authenticate_token(&self, hash: &str) -> StoreResult<TokenCheck> {
        self.cache.token(hash, self.read_token(hash)).await
    }

    async fn read_token(&self, hash: &str) -> StoreResult<Option<TokenPrincipal>> {
        let row = sqlx::query(
            "SELECT name, scope, idp, hash FROM scim_tokens WHERE hash = $1 AND revoked IS NULL",
        )
        .bind(hash.to_owned())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("hash")?;
        if !hashes_match(&stored, hash) {
            return Ok(None);
        }
        let scope: String = row.try_get("scope")?;
        Ok(Some(TokenPrincipal {
            name: row.try_get("name")?,
            scope: TokenScope::parse(&scope)
                .ok_or_else(|| corrupt(format_args!("scope {scope:?}")))?,
            idp: row.try_get("idp")?,
        }))
    }
}

impl Store {
    /// Records that a token was used. Callers throttle this: it is a write.
    pub async fn touch_token(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE scim_tokens SET last_used = $1 WHERE name = $2")
            .bind(format_ts(now()))
            .bind(name.to_owned())
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }
}
