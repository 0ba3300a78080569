//! Rebuilds the crate whenever a file under `docs/` changes, because `include_dir!` embeds that
//! folder but cannot tell Cargo (on stable Rust) which files it read.

fn main() {
    println!("cargo:rerun-if-changed=../../docs");
    println!("cargo:rerun-if-changed=build.rs");
}
