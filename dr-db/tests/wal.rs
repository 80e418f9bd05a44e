//! WAL of a real cluster: segment headers, pg_control, and the record scan agree with what
//! the server says about itself.

use chrono::Utc;
use dr_core::wal::{SegmentId, SegmentSize};
use dr_db::testing::TestCluster;
use dr_db::wal::{scan_segment, ControlFile, SegmentHeader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_segment_names_its_cluster_and_its_commits() {
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let client = cluster.connect("postgres").await.unwrap();
    let sysid: i64 = client
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await
        .unwrap()
        .get(0);
    let before = Utc::now() - chrono::Duration::seconds(1);
    client
        .batch_execute(
            "CREATE TABLE marker (id int); INSERT INTO marker VALUES (1);
             SELECT pg_create_restore_point('dr-test-point');
             INSERT INTO marker VALUES (2);",
        )
        .await
        .unwrap();
    let name: String = client
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .unwrap();
    let after = Utc::now() + chrono::Duration::seconds(1);

    let control = ControlFile::read(cluster.data_dir()).unwrap();
    assert_eq!(control.system_identifier, sysid as u64);

    let bytes = std::fs::read(cluster.data_dir().join("pg_wal").join(&name)).unwrap();
    let header = SegmentHeader::parse(&bytes).unwrap();
    assert_eq!(header.system_identifier, sysid as u64);
    assert_eq!(header.segment_size, SegmentSize::DEFAULT);
    assert_eq!(header.page_size, 8192);
    let id = SegmentId::parse(&name, header.segment_size).unwrap();
    header.check_segment(id).unwrap();

    let contents = scan_segment(&bytes, &header);
    assert!(contents.commits >= 2, "{contents:?}");
    let last = contents.last_commit.unwrap();
    assert!(before <= last && last <= after, "{last} within the test");
    assert_eq!(contents.restore_points.len(), 1, "{contents:?}");
    let rp = &contents.restore_points[0];
    assert_eq!(rp.name, "dr-test-point");
    assert!(before <= rp.time && rp.time <= after);
    assert_eq!(rp.lsn.segment(header.segment_size), id.number);
    assert!(contents.end_lsn.unwrap() > rp.lsn);
}
