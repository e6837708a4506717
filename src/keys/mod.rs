//! This server's ed25519 signing key: created on first start, kept in the data directory,
//! published (signed) at `/_matrix/key/v2/server`.
//!
//! The key file uses Synapse's format (`ed25519 <version> <unpadded base64 seed>`), so a
//! key can move between the two servers.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use ruma::api::federation::discovery::{ServerSigningKeys, VerifyKey};
use ruma::serde::{Base64, Raw};
use ruma::signatures::{Ed25519KeyPair, KeyPair};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId,
    ServerSigningKeyId, SigningKeyAlgorithm,
};

use crate::error::{Error, Result};

/// How long peers may cache our key before asking again.
const KEY_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// The fixed PKCS#8 v1 header for an ed25519 private key, followed by the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

pub struct ServerKeys {
    server_name: OwnedServerName,
    key_pair: Ed25519KeyPair,
    key_id: OwnedServerSigningKeyId,
}

impl ServerKeys {
    /// Read the key at `path`, or create it (mode 0600) if there is none.
    pub fn load_or_generate(path: &Path, server_name: OwnedServerName) -> Result<ServerKeys> {
        let (version, seed) = match std::fs::read_to_string(path) {
            Ok(text) => parse_key_file(&text)
                .map_err(|why| Error::internal(format!("{}: {why}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let generated = generate();
                write_key_file(path, &generated.0, &generated.1)?;
                tracing::info!(path = %path.display(), key = %generated.0, "generated signing key");
                generated
            }
            Err(e) => return Err(e.into()),
        };
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "signing key file is readable by others");
        }
        Self::from_seed(server_name, &version, &seed)
    }

    pub fn from_seed(
        server_name: OwnedServerName,
        version: &str,
        seed: &[u8; 32],
    ) -> Result<ServerKeys> {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(seed);
        let key_pair = Ed25519KeyPair::from_der(&der, version.to_owned())
            .map_err(|e| Error::internal(format!("invalid signing key: {e}")))?;
        let key_id =
            ServerSigningKeyId::parse(format!("{}:{version}", SigningKeyAlgorithm::Ed25519))
                .map_err(|e| Error::internal(format!("invalid key version {version:?}: {e}")))?;
        Ok(ServerKeys {
            server_name,
            key_pair,
            key_id,
        })
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    /// For signing requests through ruma (X-Matrix).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    pub fn key_id(&self) -> &OwnedServerSigningKeyId {
        &self.key_id
    }

    pub fn public_key(&self) -> Base64 {
        Base64::new(self.key_pair.public_key().to_vec())
    }

    /// Add our signature to a JSON object (signing its canonical form).
    pub fn sign_json(&self, object: &mut CanonicalJsonObject) -> Result<()> {
        ruma::signatures::sign_json(self.server_name.as_str(), &self.key_pair, object)
            .map_err(|e| Error::internal(format!("signing failed: {e}")))
    }

    /// Add the content hash and our signature to a PDU, per the room version's redaction rules.
    pub fn hash_and_sign_event(
        &self,
        object: &mut CanonicalJsonObject,
        redaction: &ruma::room_version_rules::RedactionRules,
    ) -> Result<()> {
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            &self.key_pair,
            object,
            redaction,
        )
        .map_err(|e| match e {
            // The event's own fields are too large: the caller's input, never ours.
            ruma::signatures::JsonError::PduTooLarge => {
                Error::too_large("Event is larger than 65536 bytes")
            }
            e => Error::internal(format!("event signing failed: {e}")),
        })
    }

    /// Add our signature to another server's event (invites, restricted joins we vouch
    /// for), leaving its hashes and other signatures as they are.
    pub fn sign_event(
        &self,
        object: &mut CanonicalJsonObject,
        redaction: &ruma::room_version_rules::RedactionRules,
    ) -> Result<()> {
        ruma::signatures::sign_event(self.server_name.as_str(), &self.key_pair, object, redaction)
            .map_err(|e| Error::internal(format!("event signing failed: {e}")))
    }

    /// Sign raw bytes (the X-Matrix request signature is over canonical JSON we build).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message).as_bytes().to_vec()
    }

    /// Our published keys, self-signed, valid for a day.
    pub fn signed_server_keys(&self) -> Result<Raw<ServerSigningKeys>> {
        let valid_until = MilliSecondsSinceUnixEpoch::from_system_time(
            std::time::SystemTime::now() + KEY_VALIDITY,
        )
        .ok_or_else(|| Error::internal("clock out of range"))?;
        let mut keys = ServerSigningKeys::new(self.server_name.clone(), valid_until);
        keys.verify_keys =
            BTreeMap::from([(self.key_id.clone(), VerifyKey::new(self.public_key()))]);
        let ruma::CanonicalJsonValue::Object(mut object) =
            ruma::canonical_json::to_canonical_value(&keys)
                .map_err(|e| Error::internal(format!("server keys: {e}")))?
        else {
            return Err(Error::internal("server keys are not an object"));
        };
        object.remove("signatures");
        self.sign_json(&mut object)?;
        let json = serde_json::to_string(&object)
            .map_err(|e| Error::internal(format!("server keys: {e}")))?;
        Raw::from_json_string(json).map_err(|e| Error::internal(format!("server keys: {e}")))
    }
}

fn generate() -> (String, [u8; 32]) {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let version = format!(
        "a_{}",
        crate::random::string(4, b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    );
    (version, seed)
}

fn parse_key_file(text: &str) -> Result<(String, [u8; 32]), String> {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or("empty key file")?;
    let mut parts = line.split_whitespace();
    let (Some("ed25519"), Some(version), Some(seed), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `ed25519 <version> <base64 seed>`".to_owned());
    };
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err("key version must be alphanumeric or _".to_owned());
    }
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(seed.trim_end_matches('='))
        .map_err(|e| format!("seed is not base64: {e}"))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "seed must be 32 bytes".to_owned())?;
    Ok((version.to_owned(), seed))
}

fn write_key_file(path: &Path, version: &str, seed: &[u8; 32]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let line = format!(
        "ed25519 {version} {}\n",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
    );
    // Written to a temporary file first so a crash never leaves a truncated key behind.
    let tmp = path.with_extension("key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let name: OwnedServerName = "example.org".try_into().unwrap();
        let a = ServerKeys::load_or_generate(&path, name.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = ServerKeys::load_or_generate(&path, name).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(a.public_key(), b.public_key());
        assert!(a.key_id().as_str().starts_with("ed25519:a_"));
    }

    #[test]
    fn bad_key_files_are_refused() {
        assert!(parse_key_file("").is_err());
        assert!(parse_key_file("rsa a_b c").is_err());
        assert!(parse_key_file("ed25519 a_b notbase64!").is_err());
        assert!(parse_key_file("ed25519 a_b AAAA").is_err());
    }
}
