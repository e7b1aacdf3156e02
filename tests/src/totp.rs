//! Authenticator codes as a phone's app computes them from the secret the user pool hands out
//! (RFC 6238: HMAC-SHA1 over 30-second steps, six digits).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;

const STEP_SECONDS: u64 = 30;

/// The six digits for `unix_seconds`, or `None` when `secret` is not base32.
pub fn code(secret: &str, unix_seconds: u64) -> Option<String> {
    let key = base32(secret)?;
    let counter = (unix_seconds / STEP_SECONDS).to_be_bytes();
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key),
        &counter,
    );
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    Some(format!("{:06}", (word & 0x7fff_ffff) % 1_000_000))
}

/// The code for now, after waiting out the last seconds of a step so that the server checks
/// it within the same step.
pub async fn current_code(secret: &str) -> Option<String> {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    };
    let into_step = now().as_secs() % STEP_SECONDS;
    if into_step >= STEP_SECONDS - 3 {
        tokio::time::sleep(Duration::from_secs(STEP_SECONDS - into_step)).await;
    }
    code(secret, now().as_secs())
}

/// RFC 4648 base32, padding optional.
fn base32(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0_u64;
    let mut held = 0_u32;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        bits = (bits << 5) | u64::from(value);
        held += 5;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_6238_sha1_vectors_give_their_codes() {
        // RFC 6238 appendix B: the ASCII key "12345678901234567890", last six digits.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        for (time, expected) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code(secret, time).as_deref(), Some(expected), "{time}");
        }
        assert_eq!(code("not base32!", 59), None);
    }
}
