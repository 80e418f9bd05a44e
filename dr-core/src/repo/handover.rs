//! Changing signing keys without breaking what they signed: the administrative key's
//! handover to a new key, and the keys retired from signing.
//!
//! Hosts pin a repository's administrative key at first use ([`crate::trust`]), so a new
//! administrative key would look like a replaced `dr-repo.json`. A handover is the old key's
//! signature over the new key: a host that pinned the old key follows a chain of valid
//! handovers from its pin to the key that signed the state, and re-pins. Only the holder of
//! the pinned key can start such a chain, so an attacker with bucket access still cannot.
//! (An attacker holding a stolen administrative key can hand over too: after such a theft,
//! re-provision hosts' pins with `drctl repo trust --admin-key` instead.)
//!
//! A key that stops signing (the old administrative key, a removed writer) signed audit
//! entries that must stay verifiable, but nothing newer: it is retired with the sequence
//! number of the last entry it may have signed.

use serde::{Deserialize, Serialize};

use crate::repo::RepoConfig;
use crate::signing::{PublicKey, Signature, SigningKey};

const HANDOVER_CONTEXT: &[u8] = b"dr-admin-handover-v1\n";

/// The administrative key `from` handing the repository over to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// The previous administrative key (`dr-ed25519-v1-…`).
    pub from: String,
    /// The new one.
    pub to: String,
    /// The audit entry that records the handover.
    pub audit_seq: u64,
    /// `from`'s signature over the repository id, `to` and `audit_seq`.
    pub signature: Signature,
}

/// A key that signed audit entries up to `until_seq` and nothing after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredKey {
    /// The key (`dr-ed25519-v1-…`).
    pub public_key: String,
    /// The last audit entry it may have signed.
    pub until_seq: u64,
}

fn message(repository_id: &str, to: &str, audit_seq: u64) -> Vec<u8> {
    [
        HANDOVER_CONTEXT,
        repository_id.as_bytes(),
        b"\n",
        to.as_bytes(),
        b"\n",
        audit_seq.to_string().as_bytes(),
    ]
    .concat()
}

/// `from` hands repository `repository_id` over to `to`, recorded by audit entry `audit_seq`.
pub fn hand_over(
    from: &SigningKey,
    repository_id: &str,
    to: &PublicKey,
    audit_seq: u64,
) -> Handover {
    let to = to.to_string();
    Handover {
        from: from.public_key().to_string(),
        signature: crate::signing::sign_detached(from, &message(repository_id, &to, audit_seq)),
        to,
        audit_seq,
    }
}

impl Handover {
    /// Whether `from` really signed this handover of repository `repository_id`.
    fn is_valid(&self, repository_id: &str) -> bool {
        PublicKey::parse(&self.from).is_ok_and(|from| {
            from.key_id() == self.signature.key_id
                && from.verifies_detached(
                    &message(repository_id, &self.to, self.audit_seq),
                    &self.signature,
                )
        })
    }
}

/// Whether a chain of valid handovers in `config` leads from `pinned` to its current
/// administrative key. (`config`'s own signature by that key is checked when it is read.)
pub fn leads_to_current_admin(pinned: &str, config: &RepoConfig) -> bool {
    let Some(current) = &config.admin_key else {
        return false;
    };
    let mut key = pinned;
    // Each step uses a handover at most once, so the walk ends.
    for _ in 0..config.admin_handovers.len() {
        let Some(next) = config
            .admin_handovers
            .iter()
            .find(|h| h.from == key && h.is_valid(&config.repository_id))
        else {
            return false;
        };
        key = &next.to;
        if key == current {
            return true;
        }
    }
    false
}

/// The keys whose signature audit entry `seq` may carry: the administrative key and the
/// writers, and the retired keys up to their last entry.
pub fn audit_signers(config: &RepoConfig, seq: u64) -> Vec<PublicKey> {
    let mut keys = config.manifest_signers();
    keys.extend(
        config
            .retired_keys
            .iter()
            .filter(|r| seq <= r.until_seq)
            .filter_map(|r| PublicKey::parse(&r.public_key).ok()),
    );
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed(&[seed; 32]).unwrap()
    }

    fn config_with(admin: &SigningKey, handovers: Vec<Handover>) -> RepoConfig {
        let defaults = crate::repo::RepoDefaults {
            compression: crate::Codec::None,
            encryption: "dr-aead-v1".into(),
            cipher: "aes-256-gcm".into(),
            storage_class: None,
        };
        let mut config = RepoConfig::new(defaults, vec![]).unwrap();
        config.admin_key = Some(admin.public_key().to_string());
        config.admin_handovers = handovers;
        config
    }

    #[test]
    fn a_chain_of_handovers_leads_from_the_pin_to_the_current_key() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mut config = config_with(&c, vec![]);
        let id = config.repository_id.clone();
        config.admin_handovers = vec![
            hand_over(&b, &id, c.public_key(), 7),
            hand_over(&a, &id, b.public_key(), 3),
        ];
        let pin = |k: &SigningKey| k.public_key().to_string();
        assert!(leads_to_current_admin(&pin(&a), &config));
        assert!(leads_to_current_admin(&pin(&b), &config));
        // A key never handed over from (an attacker's) leads nowhere.
        assert!(!leads_to_current_admin(&pin(&key(9)), &config));
    }

    #[test]
    fn a_forged_or_foreign_handover_is_not_followed() {
        let (old, new, attacker) = (key(1), key(2), key(9));
        let mut config = config_with(&attacker, vec![]);
        let id = config.repository_id.clone();
        // Signed by the attacker, claiming to come from the pinned key.
        let mut forged = hand_over(&attacker, &id, attacker.public_key(), 1);
        forged.from = old.public_key().to_string();
        config.admin_handovers = vec![forged];
        assert!(!leads_to_current_admin(
            &old.public_key().to_string(),
            &config
        ));
        // Genuine, but for another repository.
        let foreign = hand_over(&old, "another-repository", new.public_key(), 1);
        let config = config_with(&new, vec![foreign]);
        assert!(!leads_to_current_admin(
            &old.public_key().to_string(),
            &config
        ));
    }

    #[test]
    fn retired_keys_sign_audit_entries_up_to_their_last_one() {
        let (admin, retired) = (key(1), key(2));
        let mut config = config_with(&admin, vec![]);
        config.retired_keys = vec![RetiredKey {
            public_key: retired.public_key().to_string(),
            until_seq: 5,
        }];
        assert!(audit_signers(&config, 5).contains(retired.public_key()));
        assert!(!audit_signers(&config, 6).contains(retired.public_key()));
        assert!(audit_signers(&config, 6).contains(admin.public_key()));
    }
}
