//! Signed gate receipts: the coordinator's Ed25519-signed statement of a gate decision on a candidate
//! — its state, why, and the digests of the site reports it counted — so a site can check later,
//! offline against the coordinator's key, that its report was counted. Signed like contribution
//! receipts (`receipt.rs`) under its own domain, so neither kind can pass for the other.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    receipt::{message_in, verify_message},
    Promotion, PromotionState, ReceiptError, ReceiptSigner, SigningPublicKey,
};

/// Prefix of every signed gate statement.
pub const GATE_RECEIPT_DOMAIN: &[u8] = b"coldfuse gate receipt v1\n";

/// The signed statement of a gate decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateReceipt {
    /// The candidate iteration.
    pub iteration: u64,
    /// The decision (held, promoted or discarded).
    pub state: PromotionState,
    /// Why.
    pub reason: String,
    /// Digests of the site reports the gate's last verdict counted ([`super::SiteReport::digest`]);
    /// for a decision by hand (`decided_by` admin), those of the verdict before it.
    pub reports: Vec<String>,
    /// Operator evals it had.
    pub evals: usize,
    /// `gate`, or `admin:{token id}`.
    pub decided_by: String,
    /// Unix time of the decision.
    pub issued_at: u64,
    /// Id of the signing key.
    pub key_id: String,
}

/// A gate receipt with its signature (in the gate record; `coldfuse receipt gate` checks it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedGateReceipt {
    /// The statement.
    pub receipt: GateReceipt,
    /// Ed25519 signature over `GATE_RECEIPT_DOMAIN` + the statement's JSON, lowercase hex.
    pub signature: String,
}

impl GateReceipt {
    /// The statement of `p`'s current decision (None while it is pending).
    pub fn of(p: &Promotion) -> Option<Self> {
        (p.state != PromotionState::Pending).then(|| Self {
            iteration: p.iteration,
            state: p.state,
            reason: p.reason.clone().unwrap_or_default(),
            reports: p.used_reports.clone(),
            evals: p.evals.len(),
            decided_by: p.decided_by.clone().unwrap_or_default(),
            issued_at: p.updated_at,
            key_id: String::new(),
        })
    }
}

impl ReceiptSigner {
    /// Signs a gate decision, setting its `key_id` to this key's.
    pub fn sign_gate(&self, mut receipt: GateReceipt) -> SignedGateReceipt {
        receipt.key_id = self.key_id();
        let signature = self.sign_message(&message_in(GATE_RECEIPT_DOMAIN, &receipt));
        SignedGateReceipt { receipt, signature }
    }
}

impl SignedGateReceipt {
    /// Checks the signature against the coordinator's public key.
    pub fn verify(&self, key: &SigningPublicKey) -> Result<(), ReceiptError> {
        let message = message_in(GATE_RECEIPT_DOMAIN, &self.receipt);
        verify_message(key, &self.receipt.key_id, &message, &self.signature)
    }

    /// Whether it names the report with `digest` among those counted.
    pub fn counts(&self, digest: &str) -> bool {
        self.receipt.reports.iter().any(|d| d == digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_receipt_verifies_and_any_edit_or_other_key_fails() {
        let signer = ReceiptSigner::generate();
        let mut p = Promotion::pending(4, 10);
        assert_eq!(GateReceipt::of(&p), None, "nothing to sign while pending");
        p.state = PromotionState::Held;
        p.reason = Some("median below".into());
        p.decided_by = Some("gate".into());
        p.used_reports = vec!["a".repeat(64), "b".repeat(64)];
        let signed = signer.sign_gate(GateReceipt::of(&p).unwrap());
        signed.verify(&signer.public()).unwrap();
        assert!(signed.counts(&"b".repeat(64)) && !signed.counts(&"c".repeat(64)));
        let mut forged = signed.clone();
        forged.receipt.reports.push("c".repeat(64));
        assert_eq!(
            forged.verify(&signer.public()),
            Err(ReceiptError::BadSignature)
        );
        let mut forged = signed.clone();
        forged.receipt.state = PromotionState::Promoted;
        assert_eq!(
            forged.verify(&signer.public()),
            Err(ReceiptError::BadSignature)
        );
        let other = ReceiptSigner::generate();
        assert!(matches!(
            signed.verify(&other.public()),
            Err(ReceiptError::WrongKey { .. })
        ));
    }
}
