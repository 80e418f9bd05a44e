//! The behaviour every [`StorageTarget`] must show, as one async function to call from a
//! test with a fresh, empty target. Third-party targets run it too (feature `testing`).

use bytes::Bytes;
use dr_core::{stage::collect, ErrorKind, PutOptions, StorageExt, StorageTarget};

fn payload(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
}

/// Run the whole conformance suite against an empty `target`. Panics on the first
/// violation with a message naming the behaviour.
pub async fn run(target: &dyn StorageTarget) {
    put_get_head_list_delete(target).await;
    streaming_write_is_invisible_until_finish(target).await;
    aborted_write_leaves_nothing(target).await;
    put_if_absent_refuses_existing(target).await;
    ranged_get_returns_the_range(target).await;
    copy_duplicates_an_object(target).await;
    missing_objects_are_not_found(target).await;
    storage_class_is_accepted(target).await;
}

async fn put_get_head_list_delete(t: &dyn StorageTarget) {
    let data = payload(100_000);
    t.put_bytes("a/one", data.clone(), PutOptions::default())
        .await
        .unwrap();
    t.put_bytes("a/two", payload(10), PutOptions::default())
        .await
        .unwrap();
    t.put_bytes("b/three", payload(0), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        t.get_bytes("a/one").await.unwrap(),
        data,
        "get returns what put wrote"
    );
    assert_eq!(
        t.head("a/one").await.unwrap().size,
        100_000,
        "head reports the size"
    );
    let listed: Vec<String> = t
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    assert_eq!(listed, vec!["a/one", "a/two"], "list is by prefix, sorted");
    assert_eq!(
        t.list("").await.unwrap().len(),
        3,
        "list of '' lists everything"
    );
    t.delete("a/one").await.unwrap();
    t.delete("a/one")
        .await
        .expect("deleting a missing object succeeds");
    assert!(!t.exists("a/one").await.unwrap(), "delete removes");
    t.delete_prefix("").await.unwrap();
    assert!(t.list("").await.unwrap().is_empty());
}

async fn streaming_write_is_invisible_until_finish(t: &dyn StorageTarget) {
    let mut w = t.put_stream("s/big", PutOptions::default()).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..24u8 {
        let chunk = Bytes::from(vec![i; 1 << 20]);
        expected.extend_from_slice(&chunk);
        w.write(chunk).await.unwrap();
    }
    assert!(
        !t.exists("s/big").await.unwrap(),
        "unfinished write is not visible"
    );
    assert!(
        t.list("s/").await.unwrap().is_empty(),
        "unfinished write is not listed"
    );
    assert_eq!(w.finish().await.unwrap(), 24 << 20);
    let got = collect(t.get("s/big", None).await.unwrap()).await.unwrap();
    assert!(got == expected, "a multi-part object reads back whole");
    t.delete("s/big").await.unwrap();
}

async fn aborted_write_leaves_nothing(t: &dyn StorageTarget) {
    let mut w = t.put_stream("ab/x", PutOptions::default()).await.unwrap();
    w.write(payload(9 << 20)).await.unwrap();
    w.abort().await.unwrap();
    assert!(
        !t.exists("ab/x").await.unwrap(),
        "aborted write is not visible"
    );
    assert!(
        t.list("").await.unwrap().is_empty(),
        "aborted write leaves no object"
    );
    {
        let mut w = t.put_stream("ab/y", PutOptions::default()).await.unwrap();
        w.write(payload(1000)).await.unwrap();
        // Dropped without finish or abort.
    }
    tokio::task::yield_now().await;
    assert!(
        !t.exists("ab/y").await.unwrap(),
        "dropped write never commits"
    );
}

async fn put_if_absent_refuses_existing(t: &dyn StorageTarget) {
    t.put_if_absent("c/marker", payload(5), PutOptions::default())
        .await
        .unwrap();
    let e = t
        .put_if_absent("c/marker", payload(6), PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::AlreadyExists,
        "second create fails: {e}"
    );
    assert_eq!(
        t.get_bytes("c/marker").await.unwrap(),
        payload(5),
        "first write wins"
    );
    t.delete("c/marker").await.unwrap();
}

async fn ranged_get_returns_the_range(t: &dyn StorageTarget) {
    let data = payload(50_000);
    t.put_bytes("r/x", data.clone(), PutOptions::default())
        .await
        .unwrap();
    let part = collect(t.get("r/x", Some(1000..2500)).await.unwrap())
        .await
        .unwrap();
    assert_eq!(&part[..], &data[1000..2500]);
    t.delete("r/x").await.unwrap();
}

async fn copy_duplicates_an_object(t: &dyn StorageTarget) {
    t.put_bytes("cp/src", payload(777), PutOptions::default())
        .await
        .unwrap();
    t.copy("cp/src", "cp/dst").await.unwrap();
    assert_eq!(t.get_bytes("cp/dst").await.unwrap(), payload(777));
    t.delete_prefix("cp/").await.unwrap();
}

async fn missing_objects_are_not_found(t: &dyn StorageTarget) {
    assert_eq!(
        t.head("nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let e = match t.get("nope", None).await {
        Ok(s) => collect(s).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        t.put_bytes("../escape", payload(1), PutOptions::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

async fn storage_class_is_accepted(t: &dyn StorageTarget) {
    let opts = PutOptions {
        storage_class: Some("STANDARD_IA".into()),
        expected_size: Some(10),
    };
    t.put_bytes("sc/x", payload(10), opts)
        .await
        .expect("storage class is accepted or ignored");
    assert_eq!(t.get_bytes("sc/x").await.unwrap(), payload(10));
    t.delete("sc/x").await.unwrap();
}
