//! Presenting a repository's state: Prometheus metrics of a [`Status`](crate::status::Status).

pub mod exposition;
pub mod prometheus;
