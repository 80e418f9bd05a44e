//! Finding the differing rows of one table without pulling it across: both sides hash each
//! row's primary key into a 64-bit number and group the rows into ranges of that number
//! (its top bits), sending back only a count and a combined hash of the rows per range.
//! Ranges that agree are done; ranges that differ are split into finer ranges, again on
//! both sides, until the rows left in differing ranges are few; only then are their keys
//! and row hashes fetched and matched.
//!
//! The hash of a key does not depend on collation or on how keys are spread, so text and
//! composite keys narrow as well as integers, and a row changed on one side lands in the
//! same range on the other.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio_postgres::Client;

use dr_core::Result;

use crate::conn::{db_error, quote_ident};
use crate::diff::shape::TableShape;

/// Bits of the key hash each narrowing step adds: 4096 ranges per step.
const BITS_PER_LEVEL: u32 = 12;
/// The finest ranges (60 bits).
const MAX_LEVEL: u32 = 5;

/// One table's differing keys, each key as its columns' text.
#[derive(Debug, Default)]
pub(crate) struct KeyDiff {
    /// Keys only in the reference.
    pub missing: Vec<Vec<String>>,
    /// Keys only in the live table.
    pub extra: Vec<Vec<String>>,
    /// Keys in both whose rows differ.
    pub changed: Vec<Vec<String>>,
    /// Rows of the live table.
    pub live_rows: u64,
    /// Rows of the reference table.
    pub reference_rows: u64,
    /// Keys fetched from both sides together (the rows in the finest differing ranges).
    pub fetched_rows: u64,
    /// Narrowing steps taken (1: the first ranges were compared).
    pub levels: u32,
    /// `binary` or `text`: see [`Hashing`].
    pub hashing: &'static str,
}

/// The SQL expressions a table is compared with.
struct Exprs {
    table: String,
    key_hash: String,
    row_hash: String,
    key_text: Vec<String>,
}

/// How rows are hashed. Both sides must use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hashing {
    /// `hash_record_extended` (PostgreSQL 14+) over the columns' binary values, with each
    /// type's own hash function: no text conversion, which dominates the cost of a table
    /// of timestamps, numerics or bytea. Values equal by their type's equality hash alike
    /// (numeric 1.0 and 1.00), as they compare in SQL.
    Binary,
    /// The row's text form through `hashtextextended`: for a type without a hash function
    /// (json, point, …) or an older server.
    Text,
}

impl Hashing {
    fn name(self) -> &'static str {
        match self {
            Hashing::Binary => "binary",
            Hashing::Text => "text",
        }
    }
}

impl Exprs {
    fn of(shape: &TableShape, hashing: Hashing) -> Exprs {
        let column = |name: &str| format!("t.{}", quote_ident(name));
        let all: Vec<String> = shape.columns.iter().map(|c| column(&c.name)).collect();
        let key: Vec<String> = shape.key_columns().map(|c| column(&c.name)).collect();
        let hash = |cols: &[String], seed: u8| match hashing {
            Hashing::Binary => format!("hash_record_extended(ROW({}), {seed})", cols.join(", ")),
            Hashing::Text => format!("hashtextextended(ROW({})::text, {seed})", cols.join(", ")),
        };
        Exprs {
            table: format!("{} t", shape.qualified()),
            key_hash: hash(&key, 0),
            row_hash: hash(&all, 1),
            key_text: key.iter().map(|k| format!("{k}::text")).collect(),
        }
    }

    /// The range of `key_hash` at `bits`: its top `bits` bits.
    fn range(&self, bits: u32) -> String {
        format!(
            "(({}) >> {}) & {}",
            self.key_hash,
            64 - bits,
            (1i64 << bits) - 1
        )
    }
}

/// Per range: row count and the XOR of the row hashes.
type Ranges = BTreeMap<i64, (i64, i64)>;

/// Compare `shape`'s table on both sides (each in its own snapshot, set up by the caller),
/// narrowing until the differing ranges hold at most `leaf_rows` rows (on the larger side),
/// or until a step no longer halves them (most of the table differs: then narrowing more
/// saves nothing).
pub(crate) async fn diff_table(
    live: &Client,
    reference: &Client,
    shape: &TableShape,
    leaf_rows: u64,
) -> Result<KeyDiff> {
    let hashing = match tokio::try_join!(hashing(live, shape), hashing(reference, shape))? {
        (Hashing::Binary, Hashing::Binary) => Hashing::Binary,
        _ => Hashing::Text,
    };
    let exprs = Exprs::of(shape, hashing);
    let mut out = KeyDiff {
        hashing: hashing.name(),
        ..KeyDiff::default()
    };
    let mut parents: Option<Vec<i64>> = None;
    let mut level = 1;
    let mut before = i64::MAX;
    loop {
        let bits = level * BITS_PER_LEVEL;
        let sql = level_query(&exprs, bits, parents.is_some());
        let parent_list = parents.clone().unwrap_or_default();
        let (mine, theirs) = tokio::try_join!(
            ranges(live, &sql, &parent_list),
            ranges(reference, &sql, &parent_list)
        )?;
        if level == 1 {
            out.live_rows = mine.values().map(|(n, _)| *n as u64).sum();
            out.reference_rows = theirs.values().map(|(n, _)| *n as u64).sum();
            before = out.live_rows.max(out.reference_rows) as i64;
        }
        out.levels = level;
        let differing: BTreeSet<i64> = mine
            .keys()
            .chain(theirs.keys())
            .filter(|r| mine.get(r) != theirs.get(r))
            .copied()
            .collect();
        if differing.is_empty() {
            return Ok(out);
        }
        let rows: i64 = differing
            .iter()
            .map(|r| {
                let n = |side: &Ranges| side.get(r).map_or(0, |(n, _)| *n);
                n(&mine).max(n(&theirs))
            })
            .sum();
        let differing: Vec<i64> = differing.into_iter().collect();
        if rows <= leaf_rows as i64 || level == MAX_LEVEL || rows * 2 > before {
            let sql = leaf_query(&exprs, bits);
            let (mine, theirs) = tokio::try_join!(
                keys(live, &sql, &differing),
                keys(reference, &sql, &differing)
            )?;
            out.fetched_rows = (mine.len() + theirs.len()) as u64;
            match_keys(mine, theirs, &mut out);
            return Ok(out);
        }
        parents = Some(differing);
        before = rows;
        level += 1;
    }
}

/// Whether `client` can hash rows of `shape` binary: every column's type has an extended
/// hash function there. Probed on a row of typed NULLs (the function looks its columns'
/// hash functions up before it looks at values) inside a savepoint, so a refusal leaves
/// the caller's snapshot transaction usable.
async fn hashing(client: &Client, shape: &TableShape) -> Result<Hashing> {
    let nulls: Vec<String> = shape
        .columns
        .iter()
        .map(|c| format!("NULL::{}", c.type_name))
        .collect();
    let probe = format!("SELECT hash_record_extended(ROW({}), 0)", nulls.join(", "));
    let setup = |e| db_error("cannot probe how to hash a table's rows", e);
    client
        .batch_execute("SAVEPOINT dr_hash_probe")
        .await
        .map_err(setup)?;
    let hashing = match client.batch_execute(&probe).await {
        Ok(()) => Hashing::Binary,
        Err(_) => Hashing::Text,
    };
    let end = match hashing {
        Hashing::Binary => "RELEASE SAVEPOINT dr_hash_probe",
        Hashing::Text => "ROLLBACK TO SAVEPOINT dr_hash_probe",
    };
    client.batch_execute(end).await.map_err(setup)?;
    Ok(hashing)
}

/// Counts and combined hashes per range at `bits`, within the parent ranges `$1` (at
/// `bits - BITS_PER_LEVEL`) when `within` is set.
fn level_query(exprs: &Exprs, bits: u32, within: bool) -> String {
    let filter = if within {
        format!("WHERE {} = ANY($1)", exprs.range(bits - BITS_PER_LEVEL))
    } else {
        // Keep the parameter in the statement so that both shapes take one.
        "WHERE cardinality($1::int8[]) >= 0".to_string()
    };
    format!(
        "SELECT {range}, count(*), bit_xor({row}) FROM {table} {filter} GROUP BY 1",
        range = exprs.range(bits),
        row = exprs.row_hash,
        table = exprs.table
    )
}

/// The keys (as text) and row hashes of the rows in ranges `$1` at `bits`.
fn leaf_query(exprs: &Exprs, bits: u32) -> String {
    format!(
        "SELECT {row}, {keys} FROM {table} WHERE {range} = ANY($1)",
        row = exprs.row_hash,
        keys = exprs.key_text.join(", "),
        table = exprs.table,
        range = exprs.range(bits)
    )
}

async fn ranges(client: &Client, sql: &str, parents: &[i64]) -> Result<Ranges> {
    let rows = client
        .query(sql, &[&parents])
        .await
        .map_err(|e| db_error("cannot compute the hash ranges of a table", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

async fn keys(client: &Client, sql: &str, ranges: &[i64]) -> Result<HashMap<Vec<String>, i64>> {
    let rows = client
        .query(sql, &[&ranges])
        .await
        .map_err(|e| db_error("cannot read the keys of the differing ranges", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let key = (1..r.len()).map(|i| r.get::<_, String>(i)).collect();
            (key, r.get(0))
        })
        .collect())
}

/// Sort keys into missing, extra and changed (each list sorted, for stable output).
fn match_keys(
    live: HashMap<Vec<String>, i64>,
    mut reference: HashMap<Vec<String>, i64>,
    out: &mut KeyDiff,
) {
    for (key, hash) in live {
        match reference.remove(&key) {
            None => out.extra.push(key),
            Some(h) if h != hash => out.changed.push(key),
            Some(_) => {}
        }
    }
    out.missing = reference.into_keys().collect();
    for keys in [&mut out.missing, &mut out.extra, &mut out.changed] {
        keys.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Vec<String> {
        vec![k.to_string()]
    }

    #[test]
    fn keys_are_sorted_into_missing_extra_and_changed() {
        let live = HashMap::from([(key("a"), 1), (key("b"), 2), (key("c"), 3)]);
        let reference = HashMap::from([(key("b"), 2), (key("c"), 4), (key("d"), 5)]);
        let mut out = KeyDiff::default();
        match_keys(live, reference, &mut out);
        assert_eq!(out.extra, [key("a")]);
        assert_eq!(out.changed, [key("c")]);
        assert_eq!(out.missing, [key("d")]);
    }

    #[test]
    fn ranges_are_the_top_bits_of_the_key_hash() {
        let shape = TableShape {
            schema: "public".into(),
            name: "t".into(),
            columns: vec![crate::diff::shape::Column {
                name: "id".into(),
                type_name: "integer".into(),
                generated: false,
            }],
            key: vec![0],
        };
        let e = Exprs::of(&shape, Hashing::Binary);
        assert_eq!(
            e.range(12),
            "((hash_record_extended(ROW(t.\"id\"), 0)) >> 52) & 4095"
        );
        let e = Exprs::of(&shape, Hashing::Text);
        assert_eq!(
            e.range(12),
            "((hashtextextended(ROW(t.\"id\")::text, 0)) >> 52) & 4095"
        );
    }
}
