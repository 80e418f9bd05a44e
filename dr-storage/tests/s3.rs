//! The s3:// target against a real S3-compatible server: moto's S3 server, started by each
//! test on a free 127.0.0.1 port (`dr_storage::testing::MotoServer`; installed by
//! `scripts/prereqs.sh`, and a test fails with the install command if it is missing).

use bytes::Bytes;
use dr_core::{ErrorKind, PutOptions, StorageExt, StorageTarget};
use dr_storage::testing::{unique_name, MotoServer};

/// A running moto with a fresh bucket, and an `s3://bucket/repo` target on it.
async fn s3_target() -> (MotoServer, String, std::sync::Arc<dyn StorageTarget>) {
    let s3 = MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let bucket = unique_name("dr-s3");
    s3.create_bucket(&bucket).await.unwrap();
    let target = dr_storage::open(&format!("s3://{bucket}/repo"), &s3.options()).unwrap();
    (s3, bucket, std::sync::Arc::new(target))
}

fn class(name: &str) -> PutOptions {
    PutOptions {
        storage_class: Some(name.into()),
        expected_size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_target_conforms() {
    let (s3, bucket, target) = s3_target().await;
    assert_eq!(target.describe(), format!("s3://{bucket}/repo"));
    dr_storage::conformance::run(target.as_ref()).await;
    assert!(
        s3.pending_uploads(&bucket).await.unwrap().is_empty(),
        "aborted and dropped uploads leave no multipart parts behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_live_under_the_url_prefix() {
    let (s3, bucket, target) = s3_target().await;
    target
        .put_bytes(
            "dr-repo.json",
            Bytes::from_static(b"{}"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let root = dr_storage::open(&format!("s3://{bucket}"), &s3.options()).unwrap();
    let all: Vec<String> = root
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    assert_eq!(all, vec!["repo/dr-repo.json"]);
    assert_eq!(target.list("").await.unwrap()[0].path, "dr-repo.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_reaches_s3_for_streamed_and_conditional_puts() {
    let (s3, bucket, target) = s3_target().await;
    // A streamed (multipart) write of more than one part.
    let mut w = target
        .put_stream("backups/a/payload-0000", class("STANDARD_IA"))
        .await
        .unwrap();
    for _ in 0..3 {
        w.write(Bytes::from(vec![7u8; 4 << 20])).await.unwrap();
    }
    w.finish().await.unwrap();
    target
        .put_if_absent(
            "backups/a/marker",
            Bytes::from_static(b"x"),
            class("ONEZONE_IA"),
        )
        .await
        .unwrap();
    target
        .put_bytes("plain", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        s3.storage_class(&bucket, "repo/backups/a/payload-0000")
            .await
            .unwrap(),
        "STANDARD_IA"
    );
    assert_eq!(
        s3.storage_class(&bucket, "repo/backups/a/marker")
            .await
            .unwrap(),
        "ONEZONE_IA"
    );
    assert_eq!(
        s3.storage_class(&bucket, "repo/plain").await.unwrap(),
        "STANDARD"
    );
    assert_eq!(
        target
            .get_bytes("backups/a/payload-0000")
            .await
            .unwrap()
            .len(),
        12 << 20,
        "an infrequent-access object reads back at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_glacier_object_fails_as_archived_with_the_thaw_message() {
    let (_s3, _bucket, target) = s3_target().await;
    for storage_class in ["GLACIER", "DEEP_ARCHIVE"] {
        let path = format!("cold/{storage_class}");
        target
            .put_bytes(&path, Bytes::from_static(b"frozen"), class(storage_class))
            .await
            .unwrap();
        // Metadata stays readable; the bytes do not.
        assert_eq!(target.head(&path).await.unwrap().size, 6);
        let e = match target.get(&path, None).await {
            Ok(s) => dr_core::stage::collect(s).await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::Archived, "{}", e.report());
        let text = e.to_string();
        assert!(text.contains(storage_class), "{text}");
        assert!(text.contains("restored (thawed)"), "{text}");
        assert!(text.contains(&path), "names the object: {text}");
        assert!(!text.contains("permission"), "{text}");
        assert!(!e.is_temporary(), "retrying cannot thaw an object");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_clear_error_not_a_hang() {
    let s3 = MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let target = dr_storage::open("s3://no-such-bucket/repo", &s3.options()).unwrap();
    let e = target
        .put_bytes("x", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Storage),
        "{}",
        e.report()
    );
    assert!(
        e.report().contains("NoSuchBucket"),
        "the store's reason is kept in the chain: {}",
        e.report()
    );
}

#[test]
fn secrets_in_options_never_show_in_debug_or_describe() {
    let t = dr_storage::open(
        "s3://bucket/prefix",
        &[
            ("access_key_id", "AKIAEXAMPLEKEY"),
            ("secret_access_key", "very-secret-value"),
            ("endpoint", "http://127.0.0.1:9"),
            ("allow_http", "true"),
        ],
    )
    .unwrap();
    let shown = format!("{} {t:?}", t.describe());
    assert!(!shown.contains("very-secret-value"), "{shown}");
    assert!(!shown.contains("AKIAEXAMPLEKEY"), "{shown}");
    assert_eq!(t.describe(), "s3://bucket/prefix");
}

#[test]
fn unknown_or_malformed_options_are_refused_naming_the_key_only() {
    let e = dr_storage::open("s3://b/p", &[("regoin", "hunter2")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.report().contains("regoin"), "{}", e.report());
    assert!(!e.report().contains("hunter2"), "{}", e.report());
    let e = dr_storage::open("memory://", &[("region", "x")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = dr_storage::parse_storage_option("no-equals-sign-secret").unwrap_err();
    assert!(!e.report().contains("secret"), "{}", e.report());
    assert_eq!(
        dr_storage::parse_storage_option("endpoint=http://h:9000/x=y").unwrap(),
        ("endpoint".to_string(), "http://h:9000/x=y".to_string())
    );
}

#[test]
fn upload_options_apply_to_every_scheme() {
    let t = dr_storage::open(
        "memory://",
        &[("part_size", "16MiB"), ("max_parts", "1000")],
    )
    .unwrap();
    assert_eq!(t.upload_config().part_size, 16 << 20);
    assert_eq!(t.upload_config().max_parts, 1000);
    assert_eq!(t.upload_memory_budget(), 64 << 20);
    let t = dr_storage::open("s3://b/p", &[("parts_in_flight", "1")]).unwrap();
    assert_eq!(t.upload_memory_budget(), 16 << 20);
    assert!(t.supports_storage_classes());
    assert!(!dr_storage::open::<&str, &str>("memory://", &[])
        .unwrap()
        .supports_storage_classes());
}

/// GCS has no emulator on this machine: gs:// is covered by URL and configuration parsing
/// only (no request is sent).
#[test]
fn gcs_urls_and_options_configure_a_target() {
    let t = dr_storage::open("gs://my-bucket/dr/prod", &[("skip_signature", "true")]).unwrap();
    assert_eq!(t.describe(), "gs://my-bucket/dr/prod");
    assert!(t.supports_storage_classes());
    let e = dr_storage::open("gs://b", &[("google_no_such_key", "x")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.report().contains("google_no_such_key"), "{}", e.report());
}

/// Azure URL forms, without a server (the Azurite tests in azure.rs use one).
#[test]
fn azure_urls_and_options_configure_a_target() {
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let t = dr_storage::open(
        "az://backups/prod",
        &[("account_name", "acct"), ("access_key", key)],
    )
    .unwrap();
    assert_eq!(t.describe(), "az://backups/prod");
    assert!(!format!("{t:?}").contains(key));
    let t = dr_storage::open("azure://backups@acct/x", &[("access_key", key)]).unwrap();
    assert_eq!(t.describe(), "az://backups@acct/x");
}
