//! Notification endpoints as the table keeps them: the URL (a chat webhook URL is a credential
//! in itself) and the signing secret sealed, each bound to its tenant and endpoint.

use spotwise_aws::{SealError, SecretContext, Vault};
use spotwise_core::TenantId;
use spotwise_core::domain::StoredSecret;
use spotwise_notify::endpoint::Endpoint;

/// An endpoint with its URL and secret sealed.
pub type StoredEndpoint = Endpoint<StoredSecret>;

fn context<'a>(purpose: &'static str, tenant: &'a TenantId, id: &'a str) -> SecretContext<'a> {
    SecretContext {
        purpose,
        tenant: tenant.as_str(),
        resource: id,
    }
}

pub async fn seal(vault: &Vault, endpoint: Endpoint) -> Result<StoredEndpoint, SealError> {
    let (tenant, id) = (&endpoint.tenant_id, endpoint.id.as_str());
    let (url, secret) = tokio::try_join!(
        vault.seal(endpoint.url.as_bytes(), context("webhook-url", tenant, id)),
        vault.seal(
            endpoint.secret.as_bytes(),
            context("webhook-secret", tenant, id)
        ),
    )?;
    Ok(endpoint.with_secrets(StoredSecret::Sealed(url), StoredSecret::Sealed(secret)))
}

pub async fn open(vault: &Vault, stored: StoredEndpoint) -> Result<Endpoint, SealError> {
    let (url, secret) = {
        let (tenant, id) = (&stored.tenant_id, stored.id.as_str());
        tokio::try_join!(
            open_one(vault, &stored.url, context("webhook-url", tenant, id)),
            open_one(vault, &stored.secret, context("webhook-secret", tenant, id)),
        )?
    };
    Ok(stored.with_secrets(url, secret))
}

async fn open_one(
    vault: &Vault,
    stored: &StoredSecret,
    context: SecretContext<'_>,
) -> Result<String, SealError> {
    match stored {
        StoredSecret::Plain(plain) => Ok(plain.clone()),
        StoredSecret::Sealed(sealed) => String::from_utf8(vault.open(sealed, context).await?)
            .map_err(|_| SealError::Corrupt("not UTF-8")),
    }
}
