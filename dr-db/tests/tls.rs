//! TLS to PostgreSQL: a real cluster that refuses TCP connections without TLS, a CA and a
//! server certificate made for the test. Dump and restore go through it (dr's own
//! connections and pg_dump/pg_restore alike), the server is authenticated against
//! `PGSSLROOTCERT` when it is set, and a server that a given CA did not sign is refused.
//!
//! One test function: the steps change the process environment (`PGSSLROOTCERT`, `HOME`),
//! which tests running in parallel threads would otherwise share.

use dr_core::stage::{collect, once_bytes};
use dr_core::{Dumper, ErrorKind, Restorer};
use dr_db::testing::TestCluster;
use dr_db::tls::ROOT_CERT_VAR;
use dr_db::{PgDumper, PgRestorer};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A certificate authority, and a server certificate for 127.0.0.1 and localhost that it
/// signed: (CA certificate, server certificate, server key), all PEM.
fn certificates(ca_name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_and_restore_over_tls_with_and_without_server_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    // No ~/.postgresql/root.crt of the machine's user may take part.
    std::env::set_var("HOME", tmp.path());
    std::env::remove_var(ROOT_CERT_VAR);

    let (ca_pem, cert_pem, key_pem) = certificates("dr test CA");
    let cluster = TestCluster::start_with_tls(&cert_pem, &key_pem)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    cluster.create_database("app").await.unwrap();
    cluster
        .execute_sql(
            "app",
            "CREATE TABLE notes (id int PRIMARY KEY, body text); \
             INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();

    // The server takes no connection without TLS: what follows went through TLS.
    let mut plain = cluster.config("app");
    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let e = PgDumper::new(plain).start().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Database, "{}", e.report());
    assert!(e.report().contains("no encryption"), "{}", e.report());

    // Encrypted, server not authenticated (libpq's sslmode=require without a root CA).
    let round_trip = async |target: &str| {
        let dump = PgDumper::new(cluster.config("app"))
            .start()
            .await
            .unwrap_or_else(|e| panic!("{}", e.report()));
        let payload = collect(dump.stream).await.unwrap();
        let stats = dump
            .completion
            .finish()
            .await
            .unwrap_or_else(|e| panic!("{}", e.report()));
        PgRestorer::new(cluster.config(target))
            .create(true)
            .restore(&dump.source, &stats, once_bytes(payload.into(), 1 << 20))
            .await
            .unwrap_or_else(|e| panic!("{}", e.report()))
    };
    let report = round_trip("copy_unauthenticated").await;
    assert_eq!(report.rows_checked, 500);

    // With the CA that signed the server's certificate: authenticated, by dr and pg_dump.
    let ca_file = tmp.path().join("root.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::env::set_var(ROOT_CERT_VAR, &ca_file);
    let report = round_trip("copy_authenticated").await;
    assert_eq!(report.rows_checked, 500);

    // With another CA: the server is refused before anything is read.
    let (other_ca, _, _) = certificates("some other CA");
    let other_file = tmp.path().join("other.crt");
    std::fs::write(&other_file, other_ca).unwrap();
    std::env::set_var(ROOT_CERT_VAR, &other_file);
    let e = PgDumper::new(cluster.config("app"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Database, "{}", e.report());
    assert!(
        e.report().to_lowercase().contains("certificate"),
        "says the certificate is the problem: {}",
        e.report()
    );

    // A root certificate file that is not one says so, and where.
    let junk = tmp.path().join("junk.crt");
    std::fs::write(&junk, "not a certificate").unwrap();
    std::env::set_var(ROOT_CERT_VAR, &junk);
    let e = PgDumper::new(cluster.config("app"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", e.report());
    assert!(e.report().contains("junk.crt"), "{}", e.report());
    std::env::remove_var(ROOT_CERT_VAR);
}
