//! Measuring dr on your own data and machine: the backup pipeline per compression and
//! cipher setting ([`measure_pipeline`], with a [chart](pipeline_chart) and a
//! [recommendation](recommend)), and a repository's storage ([`measure_storage`]).
//!
//! `drctl bench pipeline` and `drctl bench storage` print these; the criterion benches in
//! `benches/` use the same functions.

mod chart;
mod discard;
mod input;
mod pipeline;
pub mod process;
mod recommend;
mod storage;

pub use chart::{pipeline_chart, scatter, ChartPoint};
pub use discard::DiscardTarget;
pub use input::{dump_to_memory, parse_size, read_file, synthetic_dump};
pub use pipeline::{
    measure_pipeline, parse_list, PipelineOptions, PipelineResult, PipelineSetting, StageSpeeds,
    DEFAULT_CODECS,
};
pub use recommend::{recommend, Recommendation};
pub use storage::{measure_storage, Latency, StorageBenchOptions, StorageResult};
