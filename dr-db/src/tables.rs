//! Naming tables (`--table app.orders`) and choosing what a restore of only some tables must
//! bring along.
//!
//! `pg_restore -t T` restores a table's definition and data and nothing else: no indexes, no
//! constraints, no column defaults, no sequences, not even the schema it lives in. A partial
//! restore here instead writes a `pg_restore --use-list` file from the archive's table of
//! contents and the dependencies recorded in it ([`crate::archive::TocEntry`]):
//!
//! * the named tables and their data (a partitioned table brings its partitions);
//! * what they depend on, transitively: schemas, types, domains, functions, and the tables
//!   they inherit from (definitions only, without data);
//! * what hangs on them and on nothing that is left out: column defaults, sequences owned by
//!   or used by their columns (with their values), constraints, indexes, triggers, policies,
//!   rules, extended statistics; a foreign key only when the table it references is restored
//!   too;
//! * comments, grants and security labels of everything restored; every extension of the
//!   database (extension members are not always recorded as dependencies);
//! * the archive's session settings (encoding, `standard_conforming_strings`, search path).
//!
//! Views, materialized views and other tables that merely use the named tables are left out.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use dr_core::{Error, ErrorKind, Result};

use crate::archive::TocEntry;

/// A table as a user names it: `name`, `schema.name`, or with double quotes around either
/// part when it holds a dot or a quote (`"my.schema"."Order ""2024"""`). Names are matched
/// exactly as PostgreSQL stores them (case-sensitive; no folding to lower case), like
/// `pg_restore -t`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// The schema, when given.
    pub schema: Option<String>,
    /// The table's name.
    pub name: String,
}

impl TableName {
    /// Whether this name denotes the table `name` in `schema`.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.name == name && self.schema.as_deref().is_none_or(|s| s == schema)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{}.{}", display_ident(schema), display_ident(&self.name)),
            None => f.write_str(&display_ident(&self.name)),
        }
    }
}

impl FromStr for TableName {
    type Err = Error;

    fn from_str(text: &str) -> Result<TableName> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "table name {text:?} {why} (expected name or schema.name; double-quote a part that holds a dot)"
            ))
        };
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(bad("has an unterminated quote")),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    if c == '"' {
                        return Err(bad("has a quote inside an unquoted part"));
                    }
                    part.push(c);
                    chars.next();
                }
            }
            if part.is_empty() {
                return Err(bad("has an empty part"));
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(_) => return Err(bad("has text after a quoted part")),
            }
        }
        match parts.len() {
            1 => Ok(TableName {
                schema: None,
                name: parts.pop().expect("one part"),
            }),
            2 => {
                let name = parts.pop().expect("two parts");
                Ok(TableName {
                    schema: parts.pop(),
                    name,
                })
            }
            _ => Err(bad("has more than two parts")),
        }
    }
}

/// `name` as PostgreSQL prints an identifier: bare when it is lower-case letters, digits
/// and underscores (not starting with a digit), else double-quoted.
pub(crate) fn display_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        crate::conn::quote_ident(name)
    }
}

/// What a partial restore restores: the list file's dump ids and the tables whose rows it
/// restores (whose row counts are then checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    /// Dump ids to restore, in archive order.
    pub dump_ids: Vec<i64>,
    /// `(schema, name)` of the tables whose data is restored.
    pub tables: BTreeSet<(String, String)>,
}

impl Selection {
    /// A `pg_restore --use-list` file: one dump id a line (pg_restore reads the number
    /// before the first `;` and ignores the rest).
    pub fn list_file(&self) -> String {
        self.dump_ids.iter().map(|id| format!("{id};\n")).collect()
    }
}

/// Relations that hold or present rows: restored only when named or needed.
const RELATIONS: &[&str] = &["TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"];
/// Objects that belong to relations: restored when every relation they belong to is.
const ATTACHED: &[&str] = &[
    "DEFAULT",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TABLE ATTACH",
    "TRIGGER",
    "POLICY",
    "ROW SECURITY",
    "RULE",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "STATISTICS",
];
/// Annotations and values of other objects: restored when everything they describe is.
const ANNOTATIONS: &[&str] = &["COMMENT", "ACL", "SECURITY LABEL", "SEQUENCE SET"];
/// Always restored.
const ALWAYS: &[&str] = &["ENCODING", "STDSTRINGS", "SEARCHPATH", "EXTENSION"];

/// Choose the entries of `toc` that restore the tables `names` with what they need (see the
/// [module documentation](self)). Fails with [`ErrorKind::NotFound`] for a name that matches
/// no table of the archive and [`ErrorKind::InvalidInput`] for an ambiguous one.
pub(crate) fn select_tables(toc: &[TocEntry], names: &[TableName]) -> Result<Selection> {
    let by_id: HashMap<i64, &TocEntry> = toc.iter().map(|e| (e.dump_id, e)).collect();
    let is = |e: &TocEntry, set: &[&str]| set.contains(&e.desc.as_str());

    // The named tables, and the partitions of named partitioned tables.
    let mut named: BTreeSet<i64> = BTreeSet::new();
    for want in names {
        let found: Vec<&TocEntry> = toc
            .iter()
            .filter(|e| e.desc == "TABLE" && want.matches(&e.namespace, &e.tag))
            .collect();
        match found.as_slice() {
            [one] => {
                named.insert(one.dump_id);
            }
            [] => {
                let mut tables: Vec<String> = toc
                    .iter()
                    .filter(|e| e.desc == "TABLE")
                    .map(|e| format!("{}.{}", display_ident(&e.namespace), display_ident(&e.tag)))
                    .collect();
                let more = tables.len().saturating_sub(12);
                tables.truncate(12);
                let mut listed = tables.join(", ");
                if more > 0 {
                    listed.push_str(&format!(" and {more} more"));
                }
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("table {want} is not in the backup (its tables: {listed})"),
                ));
            }
            many => {
                let schemas: Vec<String> =
                    many.iter().map(|e| display_ident(&e.namespace)).collect();
                return Err(Error::invalid(format!(
                    "table name {want} is ambiguous: it exists in schemas {}; write schema.table",
                    schemas.join(", ")
                )));
            }
        }
    }
    loop {
        // `TABLE ATTACH` (tag: the partition) depends on the partition and its parent.
        let mut partitions = Vec::new();
        for attach in toc.iter().filter(|e| e.desc == "TABLE ATTACH") {
            let tables = attach
                .dependencies
                .iter()
                .filter_map(|d| by_id.get(d))
                .filter(|t| t.desc == "TABLE");
            let (parts, parents): (Vec<&&TocEntry>, Vec<&&TocEntry>) =
                tables.partition(|t| t.tag == attach.tag && t.namespace == attach.namespace);
            if parents.iter().any(|p| named.contains(&p.dump_id)) {
                partitions.extend(
                    parts
                        .iter()
                        .map(|t| t.dump_id)
                        .filter(|id| !named.contains(id)),
                );
            }
        }
        if partitions.is_empty() {
            break;
        }
        named.extend(partitions);
    }

    let mut chosen: BTreeSet<i64> = named.clone();
    for e in toc {
        let data_of_named =
            e.desc == "TABLE DATA" && e.dependencies.iter().any(|d| named.contains(d));
        if data_of_named || is(e, ALWAYS) {
            chosen.insert(e.dump_id);
        }
    }
    // The relations an attached object belongs to, through other attached objects (a foreign
    // key depends on the referenced table's primary key, which belongs to that table).
    fn owners(
        id: i64,
        by_id: &HashMap<i64, &TocEntry>,
        seen: &mut BTreeSet<i64>,
        out: &mut BTreeSet<i64>,
    ) {
        let Some(e) = by_id.get(&id) else { return };
        for d in &e.dependencies {
            let Some(dep) = by_id.get(d) else { continue };
            if RELATIONS.contains(&dep.desc.as_str()) {
                out.insert(*d);
            } else if ATTACHED.contains(&dep.desc.as_str()) && seen.insert(*d) {
                owners(*d, by_id, seen, out);
            }
        }
    }
    loop {
        let before = chosen.len();
        // What the chosen entries depend on (never another table's data).
        let mut stack: Vec<i64> = chosen.iter().copied().collect();
        while let Some(id) = stack.pop() {
            for d in by_id
                .get(&id)
                .map(|e| e.dependencies.as_slice())
                .unwrap_or(&[])
            {
                if by_id.get(d).is_some_and(|e| e.desc != "TABLE DATA") && chosen.insert(*d) {
                    stack.push(*d);
                }
            }
        }
        for e in toc {
            if chosen.contains(&e.dump_id) {
                continue;
            }
            let take = if is(e, ATTACHED) {
                let mut tables = BTreeSet::new();
                owners(e.dump_id, &by_id, &mut BTreeSet::new(), &mut tables);
                !tables.is_empty() && tables.iter().all(|t| chosen.contains(t))
            } else if is(e, ANNOTATIONS) {
                !e.dependencies.is_empty() && e.dependencies.iter().all(|d| chosen.contains(d))
            } else {
                false
            };
            if take {
                chosen.insert(e.dump_id);
            }
        }
        if chosen.len() == before {
            break;
        }
    }

    let tables = toc
        .iter()
        .filter(|e| named.contains(&e.dump_id))
        .map(|e| (e.namespace.clone(), e.tag.clone()))
        .collect();
    Ok(Selection {
        dump_ids: toc
            .iter()
            .map(|e| e.dump_id)
            .filter(|id| chosen.contains(id))
            .collect(),
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> TableName {
        text.parse().unwrap()
    }

    #[test]
    fn table_names_parse_with_and_without_quotes() {
        assert_eq!(
            name("orders"),
            TableName {
                schema: None,
                name: "orders".into()
            }
        );
        assert_eq!(
            name("app.Orders"),
            TableName {
                schema: Some("app".into()),
                name: "Orders".into()
            }
        );
        assert_eq!(
            name(r#""my.schema"."say ""hi""""#),
            TableName {
                schema: Some("my.schema".into()),
                name: r#"say "hi""#.into()
            }
        );
        for bad in ["", "a.", ".a", "a.b.c", "\"open", "a\"b", "\"a\"b"] {
            let e = bad.parse::<TableName>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!(name("QrCode").to_string(), "\"QrCode\"");
        assert_eq!(name("public.users").to_string(), "public.users");
    }

    fn entry(id: i64, desc: &str, schema: &str, tag: &str, deps: &[i64]) -> TocEntry {
        TocEntry {
            dump_id: id,
            desc: desc.into(),
            namespace: schema.into(),
            tag: tag.into(),
            dependencies: deps.to_vec(),
            ..Default::default()
        }
    }

    /// Two tables, orders referencing customers, with a serial, an index, a trigger, a view,
    /// a comment, an extension and an unrelated sequence.
    fn shop() -> Vec<TocEntry> {
        vec![
            entry(1, "ENCODING", "", "ENCODING", &[]),
            entry(2, "STDSTRINGS", "", "STDSTRINGS", &[]),
            entry(3, "SCHEMA", "", "shop", &[]),
            entry(4, "EXTENSION", "", "pgcrypto", &[]),
            entry(5, "TYPE", "shop", "status", &[3]),
            entry(6, "FUNCTION", "shop", "touch()", &[3]),
            entry(10, "TABLE", "shop", "customers", &[3]),
            entry(11, "TABLE", "shop", "orders", &[3, 5]),
            entry(12, "SEQUENCE", "shop", "orders_id_seq", &[3]),
            entry(13, "SEQUENCE OWNED BY", "shop", "orders_id_seq", &[12, 11]),
            entry(14, "SEQUENCE", "shop", "unrelated", &[3]),
            entry(15, "VIEW", "shop", "big_orders", &[11]),
            entry(16, "DEFAULT", "shop", "orders id", &[11, 12]),
            entry(20, "TABLE DATA", "shop", "customers", &[10]),
            entry(21, "TABLE DATA", "shop", "orders", &[11]),
            entry(22, "SEQUENCE SET", "shop", "orders_id_seq", &[12]),
            entry(23, "SEQUENCE SET", "shop", "unrelated", &[14]),
            entry(30, "CONSTRAINT", "shop", "customers customers_pkey", &[10]),
            entry(31, "CONSTRAINT", "shop", "orders orders_pkey", &[11]),
            entry(32, "INDEX", "shop", "orders_customer_idx", &[11]),
            entry(33, "TRIGGER", "shop", "orders touch", &[11, 6]),
            entry(
                34,
                "FK CONSTRAINT",
                "shop",
                "orders orders_customer_fkey",
                &[11, 10, 30],
            ),
            entry(35, "COMMENT", "shop", "TABLE orders", &[11]),
            entry(36, "COMMENT", "shop", "VIEW big_orders", &[15]),
        ]
    }

    #[test]
    fn one_table_brings_what_it_needs_and_what_hangs_on_it() {
        let s = select_tables(&shop(), &[name("orders")]).unwrap();
        assert_eq!(
            s.dump_ids,
            [1, 2, 3, 4, 5, 6, 11, 12, 13, 16, 21, 22, 31, 32, 33, 35],
            "no customers, no foreign key to them, no view, no unrelated sequence"
        );
        assert_eq!(
            s.tables,
            BTreeSet::from([("shop".to_string(), "orders".to_string())])
        );
        assert_eq!(s.list_file().lines().next(), Some("1;"));
    }

    #[test]
    fn a_foreign_key_comes_along_when_both_tables_do() {
        let s = select_tables(&shop(), &[name("shop.orders"), name("customers")]).unwrap();
        for id in [10, 20, 30, 34] {
            assert!(s.dump_ids.contains(&id), "{id} in {:?}", s.dump_ids);
        }
        assert!(!s.dump_ids.contains(&15) && !s.dump_ids.contains(&36));
        assert_eq!(s.tables.len(), 2);
    }

    #[test]
    fn partitions_come_with_their_parent_and_a_parent_with_its_partition() {
        let toc = vec![
            entry(1, "TABLE", "public", "m", &[]),
            entry(2, "TABLE", "public", "m_2024", &[1]),
            entry(3, "TABLE ATTACH", "public", "m_2024", &[2, 1]),
            entry(4, "TABLE DATA", "public", "m_2024", &[2]),
        ];
        let s = select_tables(&toc, &[name("m")]).unwrap();
        assert_eq!(s.dump_ids, [1, 2, 3, 4]);
        let s = select_tables(&toc, &[name("m_2024")]).unwrap();
        assert_eq!(
            s.dump_ids,
            [1, 2, 3, 4],
            "the parent's definition, for the attach"
        );
        assert_eq!(s.tables.len(), 1);
    }

    #[test]
    fn unknown_and_ambiguous_names_are_refused() {
        let e = select_tables(&shop(), &[name("nope")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("shop.customers, shop.orders"), "{e}");
        let mut toc = shop();
        toc.push(entry(40, "TABLE", "archive", "orders", &[]));
        let e = select_tables(&toc, &[name("orders")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("shop, archive"), "{e}");
        assert!(select_tables(&toc, &[name("archive.orders")]).is_ok());
    }
}
