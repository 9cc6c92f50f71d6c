//! `key list` and `token list`: the rows people read and the JSON scripts parse.

use super::{or_dash, Cell, Table, Tone};
use crate::domain::{TokenInfo, TokenScope};
use crate::store::{format_ts, NamedKey};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// A key's state in one word: what decides whether the gateway accepts it.
fn key_state(key: &NamedKey, now: DateTime<Utc>) -> (String, Tone) {
    match (key.key.blocked_by, key.key.expires) {
        (Some(by), _) => (format!("blocked:{}", by.as_str()), Tone::Warn),
        (None, Some(e)) if e <= now => ("expired".into(), Tone::Warn),
        _ => ("active".into(), Tone::Good),
    }
}

/// The `key list` table: names by default; `wide` adds the user and team ids and the
/// dates. The key's own id always shows: `key revoke` takes it.
pub fn key_table(keys: &[NamedKey], wide: bool, now: DateTime<Utc>) -> Table {
    let mut table = if wide {
        Table::new([
            "ID", "PREFIX", "USER", "USER ID", "TEAM", "TEAM ID", "STATE", "CREATED", "EXPIRES",
            "NAME",
        ])
    } else {
        Table::new(["ID", "PREFIX", "USER", "TEAM", "STATE", "NAME"])
    };
    for k in keys {
        let (state, tone) = key_state(k, now);
        let team = or_dash(k.team_name.clone().or_else(|| {
            // A team key whose team row is gone still says which team it was for.
            k.key.team_id.map(|t| t.to_string())
        }));
        let mut row = vec![
            Cell::from(k.key.id.to_string()),
            Cell::from(k.key.prefix.clone()),
            Cell::from(k.user_name.clone()),
        ];
        if wide {
            row.push(Cell::new(k.key.user_id.to_string(), Tone::Dim));
            row.push(team);
            row.push(or_dash(k.key.team_id.map(|t| t.to_string())));
        } else {
            row.push(team);
        }
        row.push(Cell::new(state, tone));
        if wide {
            row.push(Cell::from(format_ts(k.key.created)));
            row.push(or_dash(k.key.expires.map(format_ts)));
        }
        row.push(or_dash(k.key.name.clone()));
        table.row(row);
    }
    table
}

/// `key list --format json`: `{"keys": [...]}`, ids and names both, oldest key first.
pub fn key_json(keys: &[NamedKey], now: DateTime<Utc>) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            let state = match (k.key.blocked_by, k.key.expires) {
                (Some(_), _) => "blocked",
                (None, Some(e)) if e <= now => "expired",
                _ => "active",
            };
            json!({
                "id": k.key.id,
                "prefix": k.key.prefix,
                "name": k.key.name,
                "state": state,
                "blocked_by": k.key.blocked_by.map(|b| b.as_str()),
                "created": format_ts(k.key.created),
                "expires": k.key.expires.map(format_ts),
                "user": {"id": k.key.user_id, "user_name": k.user_name},
                "team": k.key.team_id.map(|id| json!({"id": id, "display_name": k.team_name})),
            })
        })
        .collect();
    json!({ "keys": keys })
}

/// Only a SCIM token's writes are bound to an IdP.
fn token_idp(t: &TokenInfo) -> Option<&str> {
    (t.scope == TokenScope::Scim).then_some(t.idp.as_str())
}

/// The `token list` table (never a secret: only its hash is stored).
pub fn token_table(tokens: &[TokenInfo]) -> Table {
    let mut table = Table::new(["NAME", "SCOPE", "IDP", "CREATED", "LAST USED", "REVOKED"]);
    for t in tokens {
        table.row([
            Cell::from(t.name.clone()),
            Cell::from(t.scope.to_string()),
            or_dash(token_idp(t).map(str::to_owned)),
            Cell::from(format_ts(t.created)),
            or_dash(t.last_used.map(format_ts)),
            match t.revoked {
                Some(r) => Cell::new(format_ts(r), Tone::Bad),
                None => or_dash(None),
            },
        ]);
    }
    table
}

/// `token list --format json`: `{"tokens": [...]}` by name.
pub fn token_json(tokens: &[TokenInfo]) -> Value {
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "scope": t.scope.to_string(),
                "idp": token_idp(t),
                "state": if t.revoked.is_some() { "revoked" } else { "active" },
                "created": format_ts(t.created),
                "last_used": t.last_used.map(format_ts),
                "revoked": t.revoked.map(format_ts),
            })
        })
        .collect();
    json!({ "tokens": tokens })
}
