//! `Idempotency-Key` support for create commands.
//!
//! The response of a successful command is stored under its key in the module's own database,
//! in the same transaction as the command's effect, so "created" and "remembered" cannot come
//! apart. A repeat with the same key and the same request returns the stored response; the same
//! key with another request is refused. Failed commands store nothing (they changed nothing).

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::types::Json;

use super::{Tx, TxConn};
use crate::clock;

/// A validated `Idempotency-Key`: 1..=255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, InvalidIdempotencyKey> {
        let ok = (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key was used before with a different request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("this Idempotency-Key was already used with a different request")]
pub struct IdempotencyKeyReused;

/// A stable digest of a request, compared on replay.
pub fn fingerprint<T: Serialize>(request: &T) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an idempotent command could not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error(transparent)]
    Reused(#[from] IdempotencyKeyReused),
    #[error("idempotency storage failed")]
    Storage(#[from] sqlx::Error),
}

/// First step of an idempotent command, inside its transaction: returns the response stored
/// for `key` (same request) or [`IdempotencyKeyReused`] (another request), or `None` when the
/// command must run and then [`remember`] its response in the same transaction.
///
/// On Postgres the key is locked for the rest of the transaction, so two concurrent first uses
/// of one key cannot both run: the second waits and then replays the first's response. (The
/// single SQLite writer serializes them already.)
pub async fn replay<T: DeserializeOwned>(
    tx: &mut Tx,
    scope: &str,
    key: &IdempotencyKey,
    request_fingerprint: &str,
) -> Result<Option<T>, IdempotencyError> {
    if let TxConn::Postgres(tx) = &mut tx.conn {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("idempotency:{scope}:{}", key.as_str()))
            .execute(&mut **tx)
            .await?;
    }
    let Some((hash, response)) = find(tx, scope, key).await? else {
        return Ok(None);
    };
    if hash != request_fingerprint {
        return Err(IdempotencyKeyReused.into());
    }
    let stored = serde_json::from_value(response).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(stored))
}

/// Stores the response of a command that ran after [`replay`] returned `None`.
pub async fn remember<T: Serialize>(
    tx: &mut Tx,
    scope: &str,
    key: &IdempotencyKey,
    request_fingerprint: &str,
    response: &T,
) -> Result<(), sqlx::Error> {
    let response = serde_json::to_value(response).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    crate::with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, response, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(scope)
        .bind(key.as_str())
        .bind(request_fingerprint)
        .bind(Json(&response))
        .bind(clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
}

async fn find(
    tx: &mut Tx,
    scope: &str,
    key: &IdempotencyKey,
) -> Result<Option<(String, serde_json::Value)>, sqlx::Error> {
    let row: Option<(String, Json<serde_json::Value>)> = crate::with_tx!(tx, |conn| {
        sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key.as_str())
        .fetch_optional(conn)
        .await
    })?;
    Ok(row.map(|(hash, Json(response))| (hash, response)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_outside_one_to_255_visible_characters_are_rejected() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert_eq!(IdempotencyKey::parse(""), Err(InvalidIdempotencyKey));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)),
            Err(InvalidIdempotencyKey)
        );
        assert_eq!(
            IdempotencyKey::parse("has space"),
            Err(InvalidIdempotencyKey)
        );
    }

    #[test]
    fn fingerprints_differ_for_different_requests() {
        let a = fingerprint(&serde_json::json!({"name": "a"}));
        let b = fingerprint(&serde_json::json!({"name": "b"}));
        assert_ne!(a, b);
        assert_eq!(a, fingerprint(&serde_json::json!({"name": "a"})));
    }
}
