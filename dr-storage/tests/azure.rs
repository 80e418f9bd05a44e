//! The az:// target against a real Azure Blob server: Azurite, started by each test on a free
//! 127.0.0.1 port with in-memory persistence (`dr_storage::testing::AzuriteServer`; installed
//! by `scripts/prereqs.sh`, and a test fails with the install command if it is missing).

use bytes::Bytes;
use dr_core::{ErrorKind, PutOptions, StorageExt, StorageTarget};
use dr_storage::testing::{unique_name, AzuriteServer};

async fn azure_target() -> (AzuriteServer, String, std::sync::Arc<dyn StorageTarget>) {
    let az = AzuriteServer::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let container = unique_name("dr-az");
    az.create_container(&container).await.unwrap();
    let target = dr_storage::open(&format!("az://{container}/repo"), &az.options()).unwrap();
    (az, container, std::sync::Arc::new(target))
}

fn tier(name: &str) -> PutOptions {
    PutOptions {
        storage_class: Some(name.into()),
        expected_size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_target_conforms() {
    let (_az, container, target) = azure_target().await;
    assert_eq!(target.describe(), format!("az://{container}/repo"));
    dr_storage::conformance::run(target.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tier_reaches_azure() {
    let (az, container, target) = azure_target().await;
    let mut w = target
        .put_stream("backups/a/payload-0000", tier("Cool"))
        .await
        .unwrap();
    w.write(Bytes::from(vec![1u8; 9 << 20])).await.unwrap();
    w.finish().await.unwrap();
    target
        .put_bytes("small", Bytes::from_static(b"x"), tier("Cold"))
        .await
        .unwrap();
    assert_eq!(
        az.access_tier(&container, "repo/backups/a/payload-0000")
            .await
            .unwrap()
            .as_deref(),
        Some("Cool")
    );
    // S3's names work too: they are translated to the matching access tier.
    target
        .put_bytes("s3-named", Bytes::from_static(b"x"), tier("STANDARD_IA"))
        .await
        .unwrap();
    assert_eq!(
        az.access_tier(&container, "repo/s3-named")
            .await
            .unwrap()
            .as_deref(),
        Some("Cool")
    );
    assert_eq!(
        az.access_tier(&container, "repo/small")
            .await
            .unwrap()
            .as_deref(),
        Some("Cold")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_an_archive_tier_blob_fails_as_archived() {
    let (_az, _container, target) = azure_target().await;
    target
        .put_bytes("cold/x", Bytes::from_static(b"frozen"), tier("GLACIER"))
        .await
        .unwrap();
    let e = match target.get("cold/x", None).await {
        Ok(s) => dr_core::stage::collect(s).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Archived, "{}", e.report());
    assert!(e.to_string().contains("Archive"), "{e}");
    assert!(e.to_string().contains("restored (thawed)"), "{e}");
}
