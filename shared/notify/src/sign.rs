//! Signatures on generic webhooks: `X-Spotwise-Signature: t=<unix seconds>,v1=<hex>` where
//! the hex is HMAC-SHA256 with the endpoint's secret over `<t>.<body>`. Signing the timestamp
//! with the body lets receivers reject forgeries (wrong MAC) and replays (old `t`).

use hmac::Mac;
use spotwise_core::action::{HmacSha256, hmac_sha256};

pub const SIGNATURE_HEADER: &str = "X-Spotwise-Signature";

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = hmac_sha256(secret, timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header is not `t=<seconds>,v1=<hex>`")]
    Malformed,
    #[error("signature is {age} s old, more than the {tolerance} s allowed")]
    Stale { age: i64, tolerance: i64 },
    #[error("signature does not match the body")]
    Mismatch,
}

/// What a receiver does: checks the header against the body, the secret and the clock.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => tags.push(hex::decode(v).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if tags.is_empty() {
        return Err(VerifyError::Malformed);
    }
    // Saturating: a forged timestamp at the ends of i64 must be refused, not overflow.
    let age = now.saturating_sub(timestamp).saturating_abs();
    if age > tolerance_secs {
        return Err(VerifyError::Stale {
            age,
            tolerance: tolerance_secs,
        });
    }
    // verify_slice compares in constant time.
    if tags
        .iter()
        .any(|tag| mac(secret, timestamp, body).verify_slice(tag).is_ok())
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let secret = b"whsec_test";
        let body = br#"{"title":"spot interruption"}"#;
        let header = sign(secret, 1_795_000_000, body);
        // The README's receiver example computes the same tag.
        assert_eq!(
            header,
            "t=1795000000,v1=336ac193b45d411987a3a0af4b17bcfb473564918f8c34f4e0e22ab9246094ce"
        );
        assert_eq!(verify(secret, &header, body, 1_795_000_100, 300), Ok(()));
        assert_eq!(
            verify(
                secret,
                &header,
                br#"{"title":"all good"}"#,
                1_795_000_100,
                300
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1_795_000_100, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, &header, body, 1_795_001_000, 300),
            Err(VerifyError::Stale {
                age: 1000,
                tolerance: 300
            }),
            "a replay ten minutes later"
        );
        let forged_time = header.replace("t=1795000000", "t=1795000900");
        assert_eq!(
            verify(secret, &forged_time, body, 1_795_001_000, 300),
            Err(VerifyError::Mismatch),
            "moving the timestamp breaks the MAC"
        );
        assert_eq!(
            verify(secret, "v1=abc", body, 0, 300),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(secret, "t=1,v1=zz", body, 1, 300),
            Err(VerifyError::Malformed)
        );
    }
}
