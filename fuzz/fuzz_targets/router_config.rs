//! Router config parsing (`lookahead_api::RouterConfig` via serde_yaml, then `validate`) on
//! arbitrary bytes: an error or a config, never a panic; a valid config round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookahead_api::RouterConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = serde_yaml::from_slice::<RouterConfig>(data) else {
        return;
    };
    if config.validate().is_ok() {
        let text = serde_yaml::to_string(&config).expect("a valid config serialises");
        let back: RouterConfig = serde_yaml::from_str(&text).expect("and parses back");
        assert!(back.validate().is_ok(), "round trip stays valid");
    }
});
