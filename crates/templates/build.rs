//! Rebuilds the crate when a bundled template changes: `include_dir!` embeds the files, but
//! cargo does not know it reads them.

fn main() {
    println!("cargo:rerun-if-changed=../../templates");
}
