//! Master keys: generation, passphrases, key files, and keeping key bytes out of sight.

use base64::Engine;
use dr_core::ErrorKind;
use dr_crypto::{read_key_file, write_key_file, KdfParams, MasterKey, Passphrase};

fn fast_kdf() -> KdfParams {
    KdfParams {
        iterations: 1000,
        ..KdfParams::generate().unwrap()
    }
}

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.to_owned())
}

/// The key's bytes as hex and base64url, recovered from its key file text.
fn secret_encodings(key: &MasterKey) -> [String; 2] {
    let text = key.to_key_file();
    let b64 = text
        .lines()
        .find_map(|l| l.strip_prefix("DR-KEY-V1-"))
        .unwrap()
        .to_owned();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&b64)
        .unwrap();
    assert_eq!(raw.len(), 32);
    [hex::encode(raw), b64]
}

#[test]
fn key_id_is_16_lowercase_hex_digits_and_differs_between_keys() {
    let a = MasterKey::generate().unwrap();
    let b = MasterKey::generate().unwrap();
    for id in [a.key_id(), b.key_id()] {
        assert_eq!(id.len(), 16);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }
    assert_ne!(a.key_id(), b.key_id());
    assert_eq!(a.clone().key_id(), a.key_id());
}

#[test]
fn same_passphrase_and_params_give_the_same_key() {
    let kdf = fast_kdf();
    let a = MasterKey::from_passphrase(&pass("correct horse battery staple"), &kdf).unwrap();
    let b = MasterKey::from_passphrase(&pass("correct horse battery staple"), &kdf).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    assert_eq!(secret_encodings(&a), secret_encodings(&b));
}

#[test]
fn different_passphrase_salt_or_iterations_give_a_different_key() {
    let kdf = fast_kdf();
    let base = MasterKey::from_passphrase(&pass("correct horse"), &kdf).unwrap();
    let other_pass = MasterKey::from_passphrase(&pass("correct horsE"), &kdf).unwrap();
    let other_salt = MasterKey::from_passphrase(&pass("correct horse"), &fast_kdf()).unwrap();
    let more_iterations = MasterKey::from_passphrase(
        &pass("correct horse"),
        &KdfParams {
            iterations: 1001,
            ..kdf.clone()
        },
    )
    .unwrap();
    for k in [other_pass, other_salt, more_iterations] {
        assert_ne!(k.key_id(), base.key_id());
    }
}

#[test]
fn kdf_params_round_trip_through_json() {
    let kdf = KdfParams::generate().unwrap();
    assert_eq!(kdf.algorithm, "pbkdf2-hmac-sha256");
    assert_eq!(kdf.iterations, 600_000);
    assert_eq!(kdf.salt.len(), 32, "16 bytes as hex");
    let json = serde_json::to_string(&kdf).unwrap();
    assert_eq!(serde_json::from_str::<KdfParams>(&json).unwrap(), kdf);
    assert_ne!(KdfParams::generate().unwrap().salt, kdf.salt);
}

#[test]
fn bad_kdf_params_and_empty_passphrases_are_refused() {
    let good = fast_kdf();
    let cases = [
        (
            KdfParams {
                algorithm: "scrypt".into(),
                ..good.clone()
            },
            ErrorKind::Unsupported,
        ),
        (
            KdfParams {
                iterations: 0,
                ..good.clone()
            },
            ErrorKind::InvalidInput,
        ),
        (
            KdfParams {
                salt: "zz".repeat(16),
                ..good.clone()
            },
            ErrorKind::InvalidInput,
        ),
        (
            KdfParams {
                salt: "00".repeat(15),
                ..good.clone()
            },
            ErrorKind::InvalidInput,
        ),
    ];
    for (kdf, kind) in cases {
        let e = MasterKey::from_passphrase(&pass("pw"), &kdf).unwrap_err();
        assert_eq!(e.kind(), kind, "{kdf:?}");
    }
    let e = MasterKey::from_passphrase(&pass(""), &good).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn passphrase_debug_hides_the_passphrase() {
    let p = pass("hunter2");
    assert_eq!(format!("{p:?}"), "Passphrase(***)");
}

#[test]
fn master_key_debug_shows_the_id_and_no_key_bytes() {
    let key = MasterKey::generate().unwrap();
    let text = format!("{key:?} {key:#?}");
    assert!(text.contains(&key.key_id()));
    for secret in secret_encodings(&key) {
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains(&secret[..12]), "{text}");
    }
}

#[test]
fn key_file_text_round_trips() {
    let key = MasterKey::generate().unwrap();
    let text = key.to_key_file();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("# dr master key id ") && lines[0].contains(&key.key_id()));
    assert!(lines[1].starts_with("DR-KEY-V1-") && lines[1].len() == 10 + 43);
    assert!(text.ends_with('\n'));
    let back = MasterKey::from_key_file(&text).unwrap();
    assert_eq!(back.key_id(), key.key_id());
    // Comments are optional; blank lines and CRLF line ends are tolerated.
    let bare = format!("\r\n{}\r\n", lines[1]);
    assert_eq!(
        MasterKey::from_key_file(&bare).unwrap().key_id(),
        key.key_id()
    );
}

#[test]
fn damaged_key_text_is_invalid_input_and_never_echoed() {
    let key = MasterKey::generate().unwrap();
    let text = key.to_key_file();
    let [hex_secret, b64] = secret_encodings(&key);
    let line = format!("DR-KEY-V1-{b64}");
    // Change one character of the key (keeping it valid base64url): the id check catches it.
    let mut chars: Vec<char> = b64.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    let cases = [
        String::new(),
        "# only a comment\n".to_owned(),
        text.replace("DR-KEY-V1-", "DR-KEY-V2-"),
        text.replace(&line, &line[..line.len() - 1]),
        text.replace(&line, &format!("{line}A")),
        text.replace(&line, &format!("{line}!")),
        text.replace(&b64, &flipped),
        format!("{text}{line}\n"),
    ];
    for bad in cases {
        let e = MasterKey::from_key_file(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
        let shown = format!("{e} {e:?} {}", e.report());
        assert!(
            !shown.contains(&b64[..12]) && !shown.contains(&hex_secret[..12]),
            "{shown}"
        );
    }
}

#[cfg(unix)]
#[test]
fn key_file_is_written_with_mode_0600_and_reads_back() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.key");
    let key = MasterKey::generate().unwrap();
    write_key_file(&path, &key).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(read_key_file(&path).unwrap().key_id(), key.key_id());
}

#[test]
fn writing_a_key_file_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.key");
    let first = MasterKey::generate().unwrap();
    write_key_file(&path, &first).unwrap();
    let e = write_key_file(&path, &MasterKey::generate().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert_eq!(read_key_file(&path).unwrap().key_id(), first.key_id());
}

#[test]
fn reading_a_corrupted_key_file_is_invalid_input_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.key");
    let key = MasterKey::generate().unwrap();
    let mut text = key.to_key_file().into_bytes();
    let at = text.len() - 10;
    text[at] = b'*';
    std::fs::write(&path, &text).unwrap();
    let e = read_key_file(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert_eq!(
        read_key_file(&path).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn reading_a_missing_key_file_is_not_found_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.key");
    let e = read_key_file(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}
