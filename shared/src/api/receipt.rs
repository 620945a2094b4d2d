//! Signed contribution receipts: the coordinator's Ed25519-signed statement that it accepted a diff
//! for an iteration, and later that it fused it (with which weight, into which base). A contributor
//! keeps them and checks them offline against the coordinator's public key.
//!
//! The signature covers `RECEIPT_DOMAIN` followed by the receipt's JSON as serde writes it (fields
//! in declaration order, `null` for absent values), so the same receipt always signs to the same bytes
//! (Ed25519 is deterministic) and any edit of a field breaks the signature.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::hash::sha256_bytes;

/// Prefix of every signed message (keeps receipt signatures from meaning anything else).
pub const RECEIPT_DOMAIN: &[u8] = b"coldfuse receipt v1\n";
/// The only signature algorithm.
pub const ED25519: &str = "ed25519";

/// What a receipt attests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The diff was validated and counts towards the iteration's round.
    Accepted,
    /// The diff was fused into the committed iteration.
    Fused,
}

/// The signed statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Accepted or fused.
    pub kind: ReceiptKind,
    /// Contributor id.
    pub contributor: String,
    /// The iteration the diff is for (accepted) or was fused into (fused).
    pub iteration: u64,
    /// SHA-256 of the diff file.
    pub diff_sha256: String,
    /// SHA-256 of the base weights the diff was computed against.
    pub base_sha256: String,
    /// Examples the contributor reported.
    pub num_examples: u64,
    /// Its weight in the fusion (fused receipts).
    pub weight: Option<f64>,
    /// SHA-256 of the fused base's weights (fused receipts).
    pub fused_base_sha256: Option<String>,
    /// Unix time of the acceptance or of the commit.
    pub issued_at: u64,
    /// Id of the signing key ([`SigningPublicKey::key_id`]).
    pub key_id: String,
}

/// A receipt with its signature (what `coldfuse` saves as `receipt-*.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// The statement.
    pub receipt: Receipt,
    /// Ed25519 signature over `RECEIPT_DOMAIN` + the statement's JSON, lowercase hex (128 digits).
    pub signature: String,
}

/// A coordinator's public receipt key (served at `/v1/signing-key`, stored at `signing/public.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningPublicKey {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, lowercase hex.
    pub public_key: String,
    /// First 16 hex digits of the SHA-256 of the public key bytes.
    pub key_id: String,
}

/// A coordinator's secret receipt key as stored (in the store or an operator's file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSecretKey {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The 32-byte secret seed, lowercase hex.
    pub secret_key: String,
    /// The matching public key, lowercase hex (checked on load).
    pub public_key: String,
}

/// Why a key or receipt was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// A key that is not an Ed25519 key in our format.
    #[error("bad signing key: {0}")]
    BadKey(String),
    /// The receipt names another key than the one it is checked against.
    #[error(
        "the receipt was signed with key {receipt}, not with the coordinator's key {expected}: \
         it is from another coordinator, or forged"
    )]
    WrongKey {
        /// Key id in the receipt.
        receipt: String,
        /// Key id of the key checked against.
        expected: String,
    },
    /// The signature does not match the statement.
    #[error("the signature does not match the receipt: it was altered after signing, or forged")]
    BadSignature,
}

impl SigningPublicKey {
    /// Parses and checks the key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, ReceiptError> {
        if self.algorithm != ED25519 {
            return Err(ReceiptError::BadKey(format!(
                "algorithm {:?}, expected {ED25519:?}",
                self.algorithm
            )));
        }
        let bytes: [u8; 32] = decode_hex(&self.public_key, "public_key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| ReceiptError::BadKey(format!("public_key: {e}")))?;
        if key_id(&key) != self.key_id {
            return Err(ReceiptError::BadKey(format!(
                "key_id {} does not belong to this public key ({})",
                self.key_id,
                key_id(&key)
            )));
        }
        Ok(key)
    }

    /// The key given as bare hex (e.g. `--public-key` on the command line).
    pub fn from_hex(public_key: &str) -> Result<Self, ReceiptError> {
        let bytes: [u8; 32] = decode_hex(public_key.trim(), "public key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| ReceiptError::BadKey(format!("public key: {e}")))?;
        Ok(public_of(&key))
    }
}

/// The coordinator's signer.
#[derive(Debug, Clone)]
pub struct ReceiptSigner {
    key: SigningKey,
}

impl ReceiptSigner {
    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Loads a stored secret key, checking that its public half matches.
    pub fn from_secret(secret: &SigningSecretKey) -> Result<Self, ReceiptError> {
        if secret.algorithm != ED25519 {
            return Err(ReceiptError::BadKey(format!(
                "algorithm {:?}, expected {ED25519:?}",
                secret.algorithm
            )));
        }
        let seed: [u8; 32] = decode_hex(&secret.secret_key, "secret_key")?;
        let signer = Self {
            key: SigningKey::from_bytes(&seed),
        };
        if signer.public().public_key != secret.public_key {
            return Err(ReceiptError::BadKey(
                "public_key does not belong to secret_key".into(),
            ));
        }
        Ok(signer)
    }

    /// The secret key in its stored form.
    pub fn secret(&self) -> SigningSecretKey {
        SigningSecretKey {
            algorithm: ED25519.into(),
            secret_key: hex::encode(self.key.to_bytes()),
            public_key: hex::encode(self.key.verifying_key().to_bytes()),
        }
    }

    /// The public key.
    pub fn public(&self) -> SigningPublicKey {
        public_of(&self.key.verifying_key())
    }

    /// This key's id.
    pub fn key_id(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    /// The hex signature of `message`.
    pub(super) fn sign_message(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }

    /// Signs `receipt`, setting its `key_id` to this key's.
    pub fn sign(&self, mut receipt: Receipt) -> SignedReceipt {
        receipt.key_id = key_id(&self.key.verifying_key());
        let signature = self.key.sign(&message(&receipt));
        SignedReceipt {
            receipt,
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

impl SignedReceipt {
    /// Checks the signature against the coordinator's public key.
    pub fn verify(&self, key: &SigningPublicKey) -> Result<(), ReceiptError> {
        verify_message(
            key,
            &self.receipt.key_id,
            &message(&self.receipt),
            &self.signature,
        )
    }
}

impl Receipt {
    /// The receipt for a diff accepted into the round of `iteration` at Unix time `at`.
    pub fn accepted(iteration: u64, manifest: &crate::diff::DiffManifest, at: u64) -> Self {
        Self {
            kind: ReceiptKind::Accepted,
            contributor: manifest.contributor.clone(),
            iteration,
            diff_sha256: manifest.diff_sha256.clone(),
            base_sha256: manifest.base.sha256.clone(),
            num_examples: manifest.num_examples,
            weight: None,
            fused_base_sha256: None,
            issued_at: at,
            key_id: String::new(),
        }
    }

    /// The receipt for `contribution` fused into the committed `record` (the diff was against
    /// `base_sha256`).
    pub fn fused(
        record: &super::IterationRecord,
        contribution: &super::LineageContribution,
        base_sha256: &str,
    ) -> Self {
        Self {
            kind: ReceiptKind::Fused,
            contributor: contribution.contributor.clone(),
            iteration: record.iteration,
            diff_sha256: contribution.diff_sha256.clone(),
            base_sha256: base_sha256.to_string(),
            num_examples: contribution.num_examples,
            weight: Some(contribution.weight),
            fused_base_sha256: Some(record.base_sha256.clone()),
            issued_at: record.created_at,
            key_id: String::new(),
        }
    }
}

/// The signed bytes: domain prefix + the receipt's JSON.
fn message(receipt: &Receipt) -> Vec<u8> {
    message_in(RECEIPT_DOMAIN, receipt)
}

/// `domain` followed by `statement`'s JSON: what a signature covers.
pub(super) fn message_in(domain: &[u8], statement: &impl Serialize) -> Vec<u8> {
    let mut bytes = domain.to_vec();
    serde_json::to_writer(&mut bytes, statement).expect("a statement serialises");
    bytes
}

/// Checks `signature` (hex) over `message` with `key`, which `key_id` must name.
pub(super) fn verify_message(
    key: &SigningPublicKey,
    key_id: &str,
    message: &[u8],
    signature: &str,
) -> Result<(), ReceiptError> {
    let verifying = key.verifying_key()?;
    if key_id != key.key_id {
        return Err(ReceiptError::WrongKey {
            receipt: key_id.to_string(),
            expected: key.key_id.clone(),
        });
    }
    let bytes: [u8; 64] =
        decode_hex(signature, "signature").map_err(|_| ReceiptError::BadSignature)?;
    verifying
        .verify(message, &Signature::from_bytes(&bytes))
        .map_err(|_| ReceiptError::BadSignature)
}

fn key_id(key: &VerifyingKey) -> String {
    sha256_bytes(key.as_bytes())[..16].to_string()
}

fn public_of(key: &VerifyingKey) -> SigningPublicKey {
    SigningPublicKey {
        algorithm: ED25519.into(),
        public_key: hex::encode(key.to_bytes()),
        key_id: key_id(key),
    }
}

fn decode_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], ReceiptError> {
    let bytes =
        hex::decode(text).map_err(|e| ReceiptError::BadKey(format!("{what} is not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        ReceiptError::BadKey(format!("{what} has {} bytes, expected {N}", b.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted() -> Receipt {
        Receipt {
            kind: ReceiptKind::Fused,
            contributor: "site-a".into(),
            iteration: 3,
            diff_sha256: "d".repeat(64),
            base_sha256: "b".repeat(64),
            num_examples: 256,
            weight: Some(1.0 / 3.0),
            fused_base_sha256: Some("f".repeat(64)),
            issued_at: 1_800_000_000,
            key_id: String::new(),
        }
    }

    #[test]
    fn receipt_signs_verifies_and_survives_a_json_round_trip() {
        let signer = ReceiptSigner::generate();
        let signed = signer.sign(accepted());
        assert_eq!(signed.receipt.key_id, signer.public().key_id);
        signed.verify(&signer.public()).unwrap();
        let text = serde_json::to_string_pretty(&signed).unwrap();
        let back: SignedReceipt = serde_json::from_str(&text).unwrap();
        back.verify(&signer.public()).unwrap();
        // Deterministic: signing again gives the same bytes.
        assert_eq!(signer.sign(accepted()), signed);
        // The stored secret reloads to the same key.
        let again = ReceiptSigner::from_secret(&signer.secret()).unwrap();
        assert_eq!(again.public(), signer.public());
        assert_eq!(
            SigningPublicKey::from_hex(&signer.public().public_key).unwrap(),
            signer.public()
        );
    }

    #[test]
    fn forged_receipt_is_refused() {
        let signer = ReceiptSigner::generate();
        let signed = signer.sign(accepted());
        let key = signer.public();
        // Any edited field breaks the signature.
        let mut edited = signed.clone();
        edited.receipt.weight = Some(0.9);
        assert_eq!(edited.verify(&key), Err(ReceiptError::BadSignature));
        let mut edited = signed.clone();
        edited.receipt.iteration = 4;
        assert_eq!(edited.verify(&key), Err(ReceiptError::BadSignature));
        let mut edited = signed.clone();
        edited.signature = "00".repeat(64);
        assert_eq!(edited.verify(&key), Err(ReceiptError::BadSignature));
        edited.signature = "zz".into();
        assert_eq!(edited.verify(&key), Err(ReceiptError::BadSignature));
        // Signed by another key: named as such, whether it claims its own id or ours.
        let other = ReceiptSigner::generate();
        let forged = other.sign(accepted());
        assert!(matches!(
            forged.verify(&key),
            Err(ReceiptError::WrongKey { .. })
        ));
        let mut forged = forged;
        forged.receipt.key_id = key.key_id.clone();
        assert_eq!(forged.verify(&key), Err(ReceiptError::BadSignature));
        // A JSON with an extra field is not a receipt.
        let mut value = serde_json::to_value(&signed).unwrap();
        value["receipt"]["bonus"] = serde_json::json!(1);
        assert!(serde_json::from_value::<SignedReceipt>(value).is_err());
    }

    #[test]
    fn receipt_keys_in_bad_shape_are_refused() {
        let signer = ReceiptSigner::generate();
        let mut secret = signer.secret();
        secret.public_key = ReceiptSigner::generate().public().public_key;
        assert!(ReceiptSigner::from_secret(&secret).is_err());
        let mut public = signer.public();
        public.key_id = "0".repeat(16);
        assert!(public.verifying_key().is_err());
        assert!(SigningPublicKey::from_hex("abcd").is_err());
        let mut public = signer.public();
        public.algorithm = "rsa".into();
        assert!(matches!(
            signer.sign(accepted()).verify(&public),
            Err(ReceiptError::BadKey(_))
        ));
    }
}
