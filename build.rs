//! Link drctl with packed relative relocations (DT_RELR) on GNU/Linux.
//!
//! drctl is a position-independent executable with ~64,000 relative relocations. Stored the
//! classic way (`.rela.dyn`, 24 bytes each) they are 1.5 MB that the loader reads at every
//! start, and those pages stay in the process's resident set for its whole life. Packed (a
//! bitmap per run of words), they take 25 KB: every drctl command, a WAL push included, runs
//! ~2 MiB smaller, with ASLR kept (a non-PIE link would save 1.4 MiB more by not relocating
//! `.data.rel.ro` at all, and give up ASLR). The binary then needs glibc ≥ 2.36 where it runs
//! (one built against glibc ≥ 2.34 already needs 2.34); an older GNU ld (< 2.38) ignores the
//! unknown `-z` keyword with a warning and links the classic way.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
