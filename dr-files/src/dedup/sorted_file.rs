//! Sets of chunk ids on disk instead of on the heap: fixed-size records sorted by id in a
//! temporary file, found through a small in-memory index and one positioned read per
//! lookup. The catalog's chunk table (`chunk_table.rs`) and a backup's spilled new chunks
//! (`new_chunks.rs`) are made of these, so a backup's or a restore's memory does not grow
//! with the number of chunks in the repository.
//!
//! Not part of the repository format (nothing here is stored). Layout of the file:
//!
//! ```text
//! record 0 | record 1 | ... | record n-1          (n × RECORD bytes, no header)
//! record   = chunk id (32 bytes) | payload (RECORD - 32 bytes, the caller's)
//! ```
//!
//! Records are in ascending order of id, no id twice. The file is an unnamed temporary file
//! (`tempfile::tempfile`: mode 0600, unlinked, gone when closed). In memory: the first id of
//! every block of [`BLOCK_RECORDS`] records (32 bytes per 64 records, 0.5 byte per chunk);
//! a lookup bisects those, reads the one block (at most 3 KiB) with `pread`, and bisects it.
//!
//! [`SortedRecordsBuilder`] takes records in any order: it sorts runs of [`RUN_RECORDS`] in
//! memory, spills each to a second temporary file, and merges the runs at the end (one read
//! buffer per run), so building costs a run and a buffer per run, never the whole set. A set
//! that fits in one run stays in memory, sorted, in the run's buffer (at most 1.5 MiB, which
//! building needed anyway): no file, and a lookup is a bisection without a system call.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

use dr_core::{Error, Result};

use super::key::ChunkId;

/// Records per block of the in-memory index.
pub(crate) const BLOCK_RECORDS: usize = 64;
/// The largest record (an id and a catalog location).
pub(crate) const MAX_RECORD: usize = 48;
/// Records sorted in memory before a run is spilled (48 bytes each: 1.5 MiB).
pub(crate) const RUN_RECORDS: usize = 32 << 10;
/// Read buffer per run while merging.
const MERGE_BUFFER: usize = 32 << 10;

fn temp_error(e: std::io::Error) -> Error {
    Error::io("cannot write or read a temporary file of chunk ids", e)
}

fn temp_file() -> Result<File> {
    tempfile::tempfile().map_err(temp_error)
}

/// A record: its bytes, of which only the first `len` count.
pub(crate) type Record = [u8; MAX_RECORD];

/// Fixed-size records sorted by chunk id, in a temporary file (or in memory, for a set of
/// at most one run).
#[derive(Debug)]
pub(crate) struct SortedRecords {
    /// `None` when there is no record or they are in `memory`.
    file: Option<File>,
    record: usize,
    len: u64,
    /// The first id of each block of the file.
    firsts: Vec<ChunkId>,
    /// The records back to back, when there is no file.
    memory: Vec<u8>,
}

impl SortedRecords {
    /// No record, of `record` bytes.
    pub fn empty(record: usize) -> SortedRecords {
        SortedRecords {
            file: None,
            record,
            len: 0,
            firsts: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// Records of `record` bytes from `sorted`, already in ascending order of id with no id
    /// twice (a run spilled by [`NewChunks`](super::new_chunks::NewChunks)).
    pub fn from_sorted<'a>(
        record: usize,
        sorted: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<SortedRecords> {
        let mut writer = RecordWriter::new(record)?;
        for r in sorted {
            writer.push(r)?;
        }
        writer.finish()
    }

    /// Records in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The record of `id`, if any.
    pub fn find(&self, id: &ChunkId) -> Result<Option<Record>> {
        let Some(file) = &self.file else {
            return Ok(self.bisect(&self.memory, id));
        };
        // The last block whose first id is at most `id`.
        let block = self.firsts.partition_point(|first| first <= id);
        if block == 0 {
            return Ok(None);
        }
        let block = block - 1;
        let first = (block * BLOCK_RECORDS) as u64;
        let count = (self.len - first).min(BLOCK_RECORDS as u64) as usize;
        let mut buf = [0u8; BLOCK_RECORDS * MAX_RECORD];
        let bytes = &mut buf[..count * self.record];
        file.read_exact_at(bytes, first * self.record as u64)
            .map_err(temp_error)?;
        Ok(self.bisect(bytes, id))
    }

    /// The record of `id` among `records` (sorted, back to back), if any.
    fn bisect(&self, records: &[u8], id: &ChunkId) -> Option<Record> {
        let (mut lo, mut hi) = (0usize, records.len() / self.record);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = &records[mid * self.record..(mid + 1) * self.record];
            match at[..32].cmp(&id[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let mut out = [0u8; MAX_RECORD];
                    out[..self.record].copy_from_slice(at);
                    return Some(out);
                }
            }
        }
        None
    }

    /// Every record in order (verify and prune walk them).
    #[cfg(test)]
    pub fn all(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for r in self.memory.chunks_exact(self.record) {
            let mut copy = [0u8; MAX_RECORD];
            copy[..self.record].copy_from_slice(r);
            out.push(copy);
        }
        if let Some(file) = &self.file {
            for n in 0..self.len {
                let mut r = [0u8; MAX_RECORD];
                file.read_exact_at(&mut r[..self.record], n * self.record as u64)
                    .map_err(temp_error)?;
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// Writes records in ascending order of id to the file of a [`SortedRecords`], noting the
/// first id of each block.
struct RecordWriter {
    out: Option<BufWriter<File>>,
    record: usize,
    len: u64,
    firsts: Vec<ChunkId>,
}

impl RecordWriter {
    fn new(record: usize) -> Result<RecordWriter> {
        assert!((32..=MAX_RECORD).contains(&record), "a record holds an id");
        Ok(RecordWriter {
            out: None,
            record,
            len: 0,
            firsts: Vec::new(),
        })
    }

    fn push(&mut self, record: &[u8]) -> Result<()> {
        debug_assert_eq!(record.len(), self.record);
        if self.len % BLOCK_RECORDS as u64 == 0 {
            self.firsts.push(record[..32].try_into().expect("32 bytes"));
        }
        let out = match &mut self.out {
            Some(out) => out,
            None => self
                .out
                .insert(BufWriter::with_capacity(MERGE_BUFFER, temp_file()?)),
        };
        out.write_all(record).map_err(temp_error)?;
        self.len += 1;
        Ok(())
    }

    fn finish(self) -> Result<SortedRecords> {
        let file = match self.out {
            Some(out) => Some(out.into_inner().map_err(|e| temp_error(e.into_error()))?),
            None => None,
        };
        let mut firsts = self.firsts;
        firsts.shrink_to_fit();
        Ok(SortedRecords {
            file,
            record: self.record,
            len: self.len,
            firsts,
            memory: Vec::new(),
        })
    }
}

/// Builds a [`SortedRecords`] from records in any order. Of records with the same id, the
/// smallest (compared whole, id first) is kept.
pub(crate) struct SortedRecordsBuilder {
    record: usize,
    run: Vec<Record>,
    run_limit: usize,
    /// Sorted runs spilled so far, back to back, and their lengths in records.
    spilled: Option<BufWriter<File>>,
    runs: Vec<u64>,
}

impl SortedRecordsBuilder {
    /// A builder of records of `record` bytes.
    pub fn new(record: usize) -> SortedRecordsBuilder {
        SortedRecordsBuilder::with_run(record, RUN_RECORDS)
    }

    /// [`SortedRecordsBuilder::new`] with runs of `run_limit` records (tests make them tiny to
    /// cross run boundaries).
    pub fn with_run(record: usize, run_limit: usize) -> SortedRecordsBuilder {
        SortedRecordsBuilder {
            record,
            run: Vec::new(),
            run_limit: run_limit.max(1),
            spilled: None,
            runs: Vec::new(),
        }
    }

    /// Add a record (`record` bytes, the id first).
    pub fn push(&mut self, record: &[u8]) -> Result<()> {
        let mut r = [0u8; MAX_RECORD];
        r[..self.record].copy_from_slice(record);
        if self.run.capacity() == 0 {
            self.run.reserve_exact(self.run_limit.min(RUN_RECORDS));
        }
        self.run.push(r);
        if self.run.len() >= self.run_limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Sort the run in memory, dropping repeated ids.
    fn sort_run(&mut self) {
        // Records compare whole: the id first, then the payload (for the catalog, its pack
        // number and offset: the first pack listed wins).
        self.run.sort_unstable();
        self.run.dedup_by(|later, first| later[..32] == first[..32]);
    }

    fn spill(&mut self) -> Result<()> {
        self.sort_run();
        let out = match &mut self.spilled {
            Some(out) => out,
            None => self
                .spilled
                .insert(BufWriter::with_capacity(MERGE_BUFFER, temp_file()?)),
        };
        for r in &self.run {
            out.write_all(&r[..self.record]).map_err(temp_error)?;
        }
        self.runs.push(self.run.len() as u64);
        self.run.clear();
        Ok(())
    }

    /// The sorted records.
    pub fn finish(mut self) -> Result<SortedRecords> {
        if self.spilled.is_none() {
            // Everything fit in one run: it stays in memory, no file.
            self.sort_run();
            let mut memory = Vec::with_capacity(self.run.len() * self.record);
            for r in &self.run {
                memory.extend_from_slice(&r[..self.record]);
            }
            return Ok(SortedRecords {
                file: None,
                record: self.record,
                len: self.run.len() as u64,
                firsts: Vec::new(),
                memory,
            });
        }
        let mut writer = RecordWriter::new(self.record)?;
        if !self.run.is_empty() {
            self.spill()?;
        }
        self.run = Vec::new();
        let file = self
            .spilled
            .take()
            .expect("spilled")
            .into_inner()
            .map_err(|e| temp_error(e.into_error()))?;
        let record = self.record;
        let mut start = 0u64;
        let mut readers: Vec<RunReader> = self
            .runs
            .iter()
            .map(|&count| {
                let r = RunReader {
                    at: start * record as u64,
                    left: count,
                    buf: Vec::new(),
                    pos: 0,
                    record,
                };
                start += count;
                r
            })
            .collect();
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (n, r) in readers.iter_mut().enumerate() {
            if let Some(rec) = r.next(&file)? {
                heap.push(Reverse((rec, n)));
            }
        }
        // Runs are sorted and the heap takes the smallest record first: of records with the
        // same id, the first to come out is the one to keep.
        let mut last: Option<ChunkId> = None;
        while let Some(Reverse((rec, n))) = heap.pop() {
            let id: ChunkId = rec[..32].try_into().expect("32 bytes");
            if last != Some(id) {
                writer.push(&rec[..record])?;
                last = Some(id);
            }
            if let Some(next) = readers[n].next(&file)? {
                heap.push(Reverse((next, n)));
            }
        }
        writer.finish()
    }
}

/// Reads one spilled run through positioned reads, a buffer at a time.
struct RunReader {
    /// Where the next unread byte of the run is in the file.
    at: u64,
    /// Records not yet read into `buf`.
    left: u64,
    buf: Vec<u8>,
    pos: usize,
    record: usize,
}

impl RunReader {
    fn next(&mut self, file: &File) -> Result<Option<Record>> {
        if self.pos == self.buf.len() {
            if self.left == 0 {
                return Ok(None);
            }
            let per = (MERGE_BUFFER / self.record).max(1) as u64;
            let take = self.left.min(per);
            self.buf.resize(take as usize * self.record, 0);
            file.read_exact_at(&mut self.buf, self.at)
                .map_err(temp_error)?;
            self.at += self.buf.len() as u64;
            self.left -= take;
            self.pos = 0;
        }
        let mut r = [0u8; MAX_RECORD];
        r[..self.record].copy_from_slice(&self.buf[self.pos..self.pos + self.record]);
        self.pos += self.record;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A 40-byte record: the id, then `payload` big-endian.
    fn record(id: ChunkId, payload: u64) -> Vec<u8> {
        let mut r = id.to_vec();
        r.extend_from_slice(&payload.to_be_bytes());
        r
    }

    fn payload(r: &Record) -> u64 {
        u64::from_be_bytes(r[32..40].try_into().unwrap())
    }

    /// An id that sorts by `n` (and by nothing else).
    fn id(n: u32) -> ChunkId {
        let mut id = [0xa5; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn build(records: &[(ChunkId, u64)], run: usize) -> SortedRecords {
        let mut b = SortedRecordsBuilder::with_run(40, run);
        for (id, p) in records {
            b.push(&record(*id, *p)).unwrap();
        }
        b.finish().unwrap()
    }

    #[test]
    fn an_empty_table_finds_nothing_and_holds_no_file() {
        for table in [SortedRecords::empty(40), build(&[], 4)] {
            assert_eq!(table.len(), 0);
            assert!(table.file.is_none() && table.memory.is_empty());
            assert!(table.find(&id(0)).unwrap().is_none());
            assert!(table.find(&[0xff; 32]).unwrap().is_none());
        }
    }

    #[test]
    fn every_id_is_found_across_block_and_run_boundaries_and_gaps_are_misses() {
        // Even ids only, in reverse: every odd id is a miss between two hits.
        for count in [1u32, 63, 64, 65, 128, 129, 1000] {
            for run in [1, 2, 7, 64, 65, 5000] {
                let records: Vec<_> = (0..count)
                    .rev()
                    .map(|n| (id(2 * n), u64::from(n)))
                    .collect();
                let table = build(&records, run);
                assert_eq!(table.len(), u64::from(count));
                let one_run = (count as usize) < run;
                assert_eq!(table.file.is_none(), one_run, "one run stays in memory");
                for n in 0..count {
                    let found = table.find(&id(2 * n)).unwrap();
                    assert_eq!(
                        found.map(|r| payload(&r)),
                        Some(u64::from(n)),
                        "{count} {run}"
                    );
                    assert!(table.find(&id(2 * n + 1)).unwrap().is_none());
                }
                assert!(
                    table.find(&[0; 32]).unwrap().is_none(),
                    "below the first id"
                );
                assert!(
                    table.find(&[0xff; 32]).unwrap().is_none(),
                    "above the last id"
                );
                let all = table.all().unwrap();
                assert!(
                    all.windows(2).all(|w| w[0][..32] < w[1][..32]),
                    "sorted, no repeat"
                );
            }
        }
    }

    #[test]
    fn of_repeated_ids_the_smallest_record_is_kept_within_and_across_runs() {
        let records = [
            (id(5), 9),
            (id(1), 1),
            (id(5), 3),
            (id(2), 2),
            (id(5), 7),
            (id(5), 4),
        ];
        for run in [1, 2, 3, 100] {
            let table = build(&records, run);
            assert_eq!(table.len(), 3);
            assert_eq!(
                payload(&table.find(&id(5)).unwrap().unwrap()),
                3,
                "run {run}"
            );
        }
    }

    #[test]
    fn records_given_sorted_are_found_as_built() {
        let ids: Vec<ChunkId> = (0..200).map(|n| id(3 * n)).collect();
        let table = SortedRecords::from_sorted(32, ids.iter().map(|i| &i[..])).unwrap();
        assert_eq!(table.len(), 200);
        for n in 0..600 {
            assert_eq!(table.find(&id(n)).unwrap().is_some(), n % 3 == 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn lookups_agree_with_a_map(
            records in proptest::collection::vec((any::<[u8; 32]>(), any::<u64>()), 0..400),
            // Ids sharing a prefix with stored ones, and repeats of stored ids.
            probes in proptest::collection::vec(any::<[u8; 32]>(), 0..50),
            run in 1usize..200,
        ) {
            let mut records = records;
            // Some repeated ids with other payloads.
            let repeats: Vec<_> = records.iter().take(20).map(|(i, p)| (*i, p.wrapping_add(1))).collect();
            records.extend(repeats);
            let mut model: BTreeMap<ChunkId, u64> = BTreeMap::new();
            for (i, p) in &records {
                model.entry(*i).and_modify(|m| *m = (*m).min(*p)).or_insert(*p);
            }
            let table = build(&records, run);
            prop_assert_eq!(table.len(), model.len() as u64);
            for (i, p) in &model {
                prop_assert_eq!(table.find(i).unwrap().map(|r| payload(&r)), Some(*p));
            }
            for i in &probes {
                prop_assert_eq!(table.find(i).unwrap().map(|r| payload(&r)), model.get(i).copied());
            }
        }
    }
}
