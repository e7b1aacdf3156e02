//! Envelope encryption of secrets at rest: each secret gets its own AES-256 data key from KMS
//! (`GenerateDataKey`), is encrypted with it here (AES-256-GCM), and is stored with the data key
//! as KMS encrypted it. Opening one asks KMS to decrypt the data key (`Decrypt`), which only a
//! function granted `kms:Decrypt` on Spotwise's key can, so the table alone reveals nothing.
//!
//! Every secret is bound to an encryption context (its purpose, tenant and resource): KMS
//! refuses to decrypt a data key under another context, so a sealed value copied into another
//! tenant's item, or into another kind of item, does not open.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use rand::RngCore;
use spotwise_core::domain::Sealed;
use spotwise_core::{Classify, Disposition};

use crate::error::AwsFailure;

/// Decrypted data keys are kept this long in the function instance, so a warm function opens a
/// secret it used recently without a KMS call. Revoking `kms:Decrypt` takes effect within it.
const DATA_KEY_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
const DATA_KEY_CACHE_MAX: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Kms(#[from] AwsFailure),
    #[error("sealed secret is corrupt: {0}")]
    Corrupt(&'static str),
}

impl Classify for SealError {
    fn disposition(&self) -> Disposition {
        match self {
            SealError::Kms(failure) => failure.disposition(),
            SealError::Corrupt(_) => Disposition::NonRetryable,
        }
    }
}

/// What a secret is for and whose it is; KMS binds the data key to it.
#[derive(Debug, Clone, Copy)]
pub struct SecretContext<'a> {
    /// `cluster-secret`, `webhook-secret`, `webhook-url`: IAM conditions grant by it.
    pub purpose: &'static str,
    pub tenant: &'a str,
    /// The cluster or endpoint the secret belongs to.
    pub resource: &'a str,
}

impl SecretContext<'_> {
    fn kms(&self) -> HashMap<String, String> {
        HashMap::from([
            ("purpose".to_owned(), self.purpose.to_owned()),
            ("tenant".to_owned(), self.tenant.to_owned()),
            ("resource".to_owned(), self.resource.to_owned()),
        ])
    }

    fn aad(&self) -> Vec<u8> {
        format!("{}\n{}\n{}", self.purpose, self.tenant, self.resource).into_bytes()
    }
}

/// Seals and opens secrets with one KMS key.
pub struct Vault {
    kms: aws_sdk_kms::Client,
    key_id: String,
    data_keys: Mutex<HashMap<String, (Instant, [u8; 32])>>,
}

impl Vault {
    pub fn new(sdk: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        Self {
            kms: aws_sdk_kms::Client::new(sdk),
            key_id: key_id.into(),
            data_keys: Mutex::new(HashMap::new()),
        }
    }

    pub async fn seal(
        &self,
        plaintext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<Sealed, SealError> {
        let generated = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context.kms()))
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("kms:GenerateDataKey", e))?;
        let data_key = plain_data_key(generated.plaintext.as_ref())?;
        let encrypted_key = generated
            .ciphertext_blob
            .ok_or(SealError::Corrupt("KMS returned no encrypted data key"))?;
        let mut nonce = [0_u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut ciphertext = plaintext.to_vec();
        cipher(&data_key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.aad()),
                &mut ciphertext,
            )
            .map_err(|_| SealError::Corrupt("encryption failed"))?;
        Ok(Sealed {
            data_key: hex::encode(encrypted_key.as_ref()),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        })
    }

    pub async fn open(
        &self,
        sealed: &Sealed,
        context: SecretContext<'_>,
    ) -> Result<Vec<u8>, SealError> {
        let data_key = self.data_key(&sealed.data_key, context).await?;
        let nonce: [u8; NONCE_LEN] = hex::decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SealError::Corrupt("nonce"))?;
        let mut buffer =
            hex::decode(&sealed.ciphertext).map_err(|_| SealError::Corrupt("ciphertext"))?;
        let plaintext = cipher(&data_key)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.aad()),
                &mut buffer,
            )
            .map_err(|_| SealError::Corrupt("authentication failed"))?;
        Ok(plaintext.to_vec())
    }

    async fn data_key(
        &self,
        encrypted_hex: &str,
        context: SecretContext<'_>,
    ) -> Result<[u8; 32], SealError> {
        let cache_key = format!(
            "{}\n{encrypted_hex}",
            String::from_utf8_lossy(&context.aad())
        );
        if let Ok(cache) = self.data_keys.lock()
            && let Some((at, key)) = cache.get(&cache_key)
            && at.elapsed() < DATA_KEY_CACHE_TTL
        {
            return Ok(*key);
        }
        let encrypted = hex::decode(encrypted_hex).map_err(|_| SealError::Corrupt("data key"))?;
        let decrypted = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(encrypted))
            .set_encryption_context(Some(context.kms()))
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("kms:Decrypt", e))?;
        let key = plain_data_key(decrypted.plaintext.as_ref())?;
        if let Ok(mut cache) = self.data_keys.lock() {
            if cache.len() >= DATA_KEY_CACHE_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < DATA_KEY_CACHE_TTL);
                if cache.len() >= DATA_KEY_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(cache_key, (Instant::now(), key));
        }
        Ok(key)
    }
}

fn plain_data_key(blob: Option<&Blob>) -> Result<[u8; 32], SealError> {
    blob.and_then(|k| k.as_ref().try_into().ok())
        .ok_or(SealError::Corrupt("KMS returned no 256-bit data key"))
}

fn cipher(key: &[u8; 32]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Corrupt("data key"))
}
