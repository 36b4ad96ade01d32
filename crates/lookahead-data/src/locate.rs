//! Where the real routing dataset is on a development or CI machine: `$LOOKAHEAD_DATA`, else the
//! `shared/data/routing` folder beside the checkout. Tests that need the data ask here, and skip
//! with the returned reason when it is absent.

use std::path::PathBuf;

/// The dataset folder when it holds a `manifest.json`; otherwise why not, naming where it looked.
pub fn shared_dataset() -> Result<PathBuf, String> {
    let dir = std::env::var_os("LOOKAHEAD_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // This crate sits at <checkout>/crates/lookahead-data; `shared/` is beside <checkout>.
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/routing")
        });
    if dir.join("manifest.json").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "no routing dataset at {} (set LOOKAHEAD_DATA)",
            dir.display()
        ))
    }
}
