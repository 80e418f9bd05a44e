//! `drctl report`: the recoverability report as one HTML page or as Markdown.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use dr::core::{Error, Repository, Result};
use dr::report::Report;

use crate::args::RepoArgs;
use crate::status::ObjectiveArgs;

/// The report's format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One self-contained page (inline CSS and SVG charts; nothing fetched).
    Html,
    /// Markdown, for the runbook's "document results".
    Md,
}

/// Arguments of `drctl report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub objectives: ObjectiveArgs,
    /// Write the report here (default: stdout).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// html or md.
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
}

pub async fn run(args: ReportArgs) -> Result<()> {
    let objectives = args.objectives.objectives()?;
    let repo = Repository::open(args.repo.storage()?).await?;
    let report = Report::gather(&repo, &objectives).await?;
    let text = match args.format {
        Format::Html => dr::report::html::render(&report),
        Format::Md => dr::report::markdown::render(&report),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|e| {
            Error::new(
                dr::core::ErrorKind::Io,
                format!("cannot write the report to {}", path.display()),
            )
            .with_source(e)
        }),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
