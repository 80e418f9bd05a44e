//! Every built-in target passes the conformance suite.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_target_conforms() {
    let t = dr_storage::from_url("memory://").unwrap();
    dr_storage::conformance::run(t.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_target_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let t = dr_storage::from_url(dir.path().to_str().unwrap()).unwrap();
    dr_storage::conformance::run(t.as_ref()).await;
    let left: Vec<_> = walk(dir.path());
    assert!(
        left.iter().all(|p| p.is_dir()),
        "no staging files left behind: {left:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
