//! Storage URLs and options: which store a URL names, and how it is configured.
//!
//! | URL | store | settings from the environment |
//! |---|---|---|
//! | `s3://bucket/prefix` | Amazon S3 or any S3-compatible store (MinIO, Ceph, R2, moto) | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, … |
//! | `gs://bucket/prefix` | Google Cloud Storage | `GOOGLE_SERVICE_ACCOUNT` (a key file path), `GOOGLE_SERVICE_ACCOUNT_KEY` (the JSON itself), `GOOGLE_APPLICATION_CREDENTIALS`, … |
//! | `az://container/prefix` (also `azure://`) | Azure Blob Storage | `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, `AZURE_STORAGE_USE_EMULATOR`, `AZURE_STORAGE_ENDPOINT`, … |
//! | `file:///dir` or a plain path | a local directory | — |
//! | `memory://` | a fresh in-memory store (tests) | — |
//!
//! Explicit options (`key=value`, `drctl --storage-opt`) override the environment. Their keys
//! are object_store's configuration keys, with or without the cloud's prefix and in any
//! case: `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`,
//! `aws_virtual_hosted_style_request`, `account_name`, `access_key`, `use_emulator`,
//! `service_account`, … A key the store does not know is an error (a typo must not silently
//! fall back to a default). Three more keys tune uploads on every scheme (see
//! [`UploadConfig`]): `part_size` (e.g. `16MiB`), `max_parts` (e.g. `1000` for a store with
//! that limit) and `parts_in_flight`.
//!
//! Objects go under `prefix/` (object_store's `PrefixStore`), so several repositories can
//! share a bucket. Descriptions (`describe()`, `Debug`, error messages) show the scheme,
//! bucket and prefix only: credentials from options or the environment never appear.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Once};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use dr_core::{Error, ErrorKind, Result};

use crate::object::{ClassDialect, ObjectStoreTarget};
use crate::upload::UploadConfig;

/// Install ring as rustls' process-wide crypto provider, once. The cloud stores' HTTP client
/// (reqwest built with `rustls-no-provider`) uses it; an application that installed a
/// provider of its own first keeps it.
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    Memory,
    File(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
    },
    Azure {
        container: String,
        account: Option<String>,
        prefix: String,
    },
}

impl Location {
    /// The secret-free form used in messages.
    fn describe(&self) -> String {
        let with_prefix = |scheme: &str, root: &str, prefix: &str| {
            if prefix.is_empty() {
                format!("{scheme}://{root}")
            } else {
                format!("{scheme}://{root}/{prefix}")
            }
        };
        match self {
            Location::Memory => "memory://".into(),
            Location::File(dir) => format!("file://{}", dir.display()),
            Location::S3 { bucket, prefix } => with_prefix("s3", bucket, prefix),
            Location::Gcs { bucket, prefix } => with_prefix("gs", bucket, prefix),
            Location::Azure {
                container,
                account: Some(account),
                prefix,
            } => with_prefix("az", &format!("{container}@{account}"), prefix),
            Location::Azure {
                container, prefix, ..
            } => with_prefix("az", container, prefix),
        }
    }
}

/// Parse a repository URL without opening anything.
pub(crate) fn parse(url: &str) -> Result<Location> {
    if url == "memory://" || url == "memory:" {
        return Ok(Location::Memory);
    }
    if url.is_empty() {
        return Err(Error::invalid("the repository URL is empty"));
    }
    if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(Error::invalid(format!(
                "repository URL '{url}': file URLs need an absolute path (file:///srv/backups)"
            )));
        }
        return Ok(Location::File(PathBuf::from(rest)));
    }
    let Some((scheme, _)) = url.split_once("://") else {
        let p = Path::new(url);
        let dir = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("reading the current directory", e))?
                .join(p)
        };
        return Ok(Location::File(dir));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "s3" | "s3a" | "gs" | "az" | "azure") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "repository URL scheme '{scheme}://' is not supported (s3://, gs://, az://, file://, memory://)"
            ),
        ));
    }
    // Never echo the URL itself in these errors: a user may have pasted a secret into it.
    let parsed = ::url::Url::parse(url).map_err(|e| {
        Error::invalid(format!(
            "the {scheme}:// repository URL is malformed (expected {scheme}://bucket/prefix)"
        ))
        .with_source(e)
    })?;
    if parsed.password().is_some() {
        return Err(Error::invalid(format!(
            "the {scheme}:// repository URL must not carry credentials: use the environment or --storage-opt"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::invalid(format!(
            "the {scheme}:// repository URL must not have a query or fragment: pass settings with --storage-opt key=value"
        )));
    }
    let host = parsed.host_str().unwrap_or_default().to_string();
    if host.is_empty() {
        return Err(Error::invalid(format!(
            "the {scheme}:// repository URL names no bucket (expected {scheme}://bucket/prefix)"
        )));
    }
    // The prefix as written: the parsed URL would resolve `a/../b` silently.
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    let raw_path = after_scheme.split_once('/').map_or("", |(_, p)| p);
    let prefix = raw_path.trim_matches('/').to_string();
    if !prefix.is_empty() {
        dr_core::storage::check_path(&prefix).map_err(|_| {
            Error::invalid(format!(
                "the prefix '{prefix}' of the repository URL is not a valid object path"
            ))
        })?;
    }
    Ok(match scheme.as_str() {
        "s3" | "s3a" => Location::S3 {
            bucket: host,
            prefix,
        },
        "gs" => Location::Gcs {
            bucket: host,
            prefix,
        },
        _ => {
            // az://container/prefix, or az://container@account/prefix.
            let user = parsed.username();
            if user.is_empty() {
                Location::Azure {
                    container: host,
                    account: None,
                    prefix,
                }
            } else {
                Location::Azure {
                    container: user.to_string(),
                    account: Some(host),
                    prefix,
                }
            }
        }
    })
}

/// Open the target a URL names, with explicit `key=value` options on top of the
/// environment (see the module docs).
pub(crate) fn open(url: &str, options: &[(String, String)]) -> Result<ObjectStoreTarget> {
    let location = parse(url)?;
    let description = location.describe();
    let mut upload = match &location {
        Location::File(_) => UploadConfig::local(),
        _ => UploadConfig::default(),
    };
    let mut store_opts = Vec::new();
    for (key, value) in options {
        let key = key.trim().to_ascii_lowercase();
        if dr_core::redact::redact_url_credentials(value) != *value {
            // HTTP clients log and quote the URLs they use: the secret would leak there.
            return Err(Error::invalid(format!(
                "storage option {key} is a URL with a user name or password: put credentials \
                 in the environment (AWS_*, GOOGLE_*, AZURE_*), never in a URL"
            )));
        }
        if !upload.set(&key, value)? {
            store_opts.push((key, value.clone()));
        }
    }
    let (store, dialect): (Arc<dyn ObjectStore>, Option<ClassDialect>) = match &location {
        Location::Memory => {
            no_store_options(&store_opts, "memory://")?;
            (Arc::new(object_store::memory::InMemory::new()), None)
        }
        Location::File(dir) => {
            no_store_options(&store_opts, "file://")?;
            let target = ObjectStoreTarget::local(dir)?;
            return Ok(target.with_upload_config(upload));
        }
        Location::S3 { bucket, prefix } => {
            install_crypto_provider();
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (k, v) in &store_opts {
                b = b.with_config(config_key::<AmazonS3ConfigKey>(k, "S3")?, v);
            }
            let store = b.build().map_err(|e| build_error(e, &description))?;
            (with_prefix(store, prefix), Some(ClassDialect::AsGiven))
        }
        Location::Gcs { bucket, prefix } => {
            install_crypto_provider();
            let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            for (k, v) in &store_opts {
                b = b.with_config(config_key::<GoogleConfigKey>(k, "GCS")?, v);
            }
            let store = b.build().map_err(|e| build_error(e, &description))?;
            (with_prefix(store, prefix), Some(ClassDialect::Gcs))
        }
        Location::Azure {
            container,
            account,
            prefix,
        } => {
            install_crypto_provider();
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container);
            if let Some(account) = account {
                b = b.with_account(account);
            }
            for (k, v) in &store_opts {
                b = b.with_config(config_key::<AzureConfigKey>(k, "Azure")?, v);
            }
            let store = b.build().map_err(|e| build_error(e, &description))?;
            (with_prefix(store, prefix), Some(ClassDialect::Azure))
        }
    };
    Ok(
        ObjectStoreTarget::new(store, description, dialect.is_some())
            .with_class_dialect(dialect.unwrap_or(ClassDialect::AsGiven))
            .with_upload_config(upload),
    )
}

fn with_prefix<S: ObjectStore>(store: S, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// Parse a store configuration key, naming the key (never the value) when it is unknown.
fn config_key<K: FromStr>(key: &str, store: &str) -> Result<K> {
    key.parse::<K>().map_err(|_| {
        Error::invalid(format!(
            "unknown {store} storage option '{key}' (see object_store's {store} configuration keys, or part_size, max_parts, parts_in_flight)"
        ))
    })
}

fn no_store_options(opts: &[(String, String)], scheme: &str) -> Result<()> {
    match opts.first() {
        None => Ok(()),
        Some((k, _)) => Err(Error::invalid(format!(
            "storage option '{k}' does not apply to {scheme} repositories"
        ))),
    }
}

fn build_error(e: object_store::Error, description: &str) -> Error {
    Error::invalid(format!(
        "cannot configure the storage client for {description}: check the URL, --storage-opt values and the cloud's environment variables"
    ))
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_parse_into_bucket_and_prefix() {
        assert_eq!(
            parse("s3://backups/prod/db").unwrap(),
            Location::S3 {
                bucket: "backups".into(),
                prefix: "prod/db".into()
            }
        );
        assert_eq!(
            parse("s3://backups/").unwrap(),
            Location::S3 {
                bucket: "backups".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            parse("gs://b/p/").unwrap(),
            Location::Gcs {
                bucket: "b".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(
            parse("az://c/p").unwrap(),
            Location::Azure {
                container: "c".into(),
                account: None,
                prefix: "p".into()
            }
        );
        assert_eq!(parse("az://c@acct/p").unwrap().describe(), "az://c@acct/p");
        assert_eq!(parse("memory://").unwrap(), Location::Memory);
    }

    #[test]
    fn urls_with_credentials_or_queries_are_refused_without_echoing_them() {
        let e = parse("s3://AKIAX:hunter2@bucket/p").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(!e.report().contains("hunter2"), "{}", e.report());
        let e = parse("s3://bucket/p?secret_access_key=hunter2").unwrap_err();
        assert!(!e.report().contains("hunter2"), "{}", e.report());
        assert_eq!(
            parse("s3:///p").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            parse("s3://b/a/../x").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
