//! Account shared access signatures (SAS) — how meetbot talks to Azurite,
//! which the 1.x SDK cannot reach with a shared key. Production uses Entra
//! tokens instead. Signing follows the account-SAS rules for service version
//! 2020-12-06 and later (string-to-sign with the encryption-scope line).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, documented).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const SAS_VERSION: &str = "2021-08-06";

/// An account SAS query string (without `?`) granting read, write, delete,
/// list, add, create, update and process on `services` (`b`, `q`, `t`, any
/// combination) for all resource types until `expiry`.
pub fn account_sas(
    account: &str,
    key_b64: &str,
    services: &str,
    expiry: time::OffsetDateTime,
) -> Result<String, String> {
    let (sp, srt, spr) = ("rwdlacup", "sco", "https,http");
    let se = expiry
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    let sts = format!("{account}\n{sp}\n{services}\n{srt}\n\n{se}\n\n{spr}\n{SAS_VERSION}\n\n");
    let key = STANDARD
        .decode(key_b64.trim())
        .map_err(|_| "account key is not base64".to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(sts.as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    Ok(url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", srt)
        .append_pair("sp", sp)
        .append_pair("se", &se)
        .append_pair("spr", spr)
        .append_pair("sig", &sig)
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_storage_service() {
        // Reference computed independently (Python hmac over the same
        // string-to-sign) for Azurite's account key.
        let expiry = time::macros::datetime!(2026-11-23 17:23:26 UTC);
        let q = account_sas(AZURITE_ACCOUNT, AZURITE_KEY, "bqt", expiry).unwrap();
        assert!(q.starts_with("sv=2021-08-06&ss=bqt&srt=sco&sp=rwdlacup&se=2026-11-23T17%3A23%3A26Z&spr=https%2Chttp&sig="), "{q}");
        let sig = url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "sig")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        assert_eq!(sig, "hMf3Q3u1au8ZxhAjmqgOPLE5BFX5yxKhx/lFuInfIjc=");
        assert!(account_sas(AZURITE_ACCOUNT, "not base64!", "b", expiry).is_err());
    }
}
